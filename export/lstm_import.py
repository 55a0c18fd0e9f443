"""``lstm-import``: make a model repository version of your own recurrent ONNX model.

    lstm-import SRC.onnx --repository DIR --name NAME [--version N] [--map ROLE=TENSOR ...]
                [--layout batch|seq] [--features NAME,...]

The service serves a graph with the tensors ``x [batch, seq, features]``, ``h0``/``c0``
``[layers, batch, hidden]`` in and ``y [batch, seq, outputs]``, ``hn``/``cn`` out (a GRU:
``h0`` in, ``hn`` out, no cell state). A graph exported by ``torch.onnx.export`` from
``nn.LSTM`` or ``nn.GRU`` (any number of layers, either ``batch_first``) has them under names
of its own, in any order, sequence-first or batch-first. This command decides each tensor's
role from the graph itself -- which input reaches the recurrent nodes' input sequence,
initial hidden and initial cell state; which output comes from their output sequence, final
hidden and final cell state -- and the layout by running the graph;
``--map`` and ``--layout`` settle what it cannot decide. It then writes one self-contained
``model.onnx`` (external data folded in) whose tensors carry the service's names (a
sequence-first graph gets a transpose at each end, so every protocol stays batch-first), and a
``model.json`` that records the original names and layout, after checking on random inputs
that the graph takes dynamic batch and sequence axes and that several chunkings of a sequence,
run in batches of several sizes, equal the one-pass run (1e-5 of the output's magnitude).

Anything it refuses exits 2 with one line naming the reason and the fix, and writes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.contract import card_tensors
from export.verify import TOL

ROLES = ("x", "h0", "c0", "y", "hn", "cn")
# per ONNX recurrent operator: its input ports (X, W, R, B, sequence_lens, initial_h[, initial_c])
# and output ports (Y, Y_h[, Y_c]) that carry a role
PORTS = {
    "LSTM": ({0: "x", 5: "h0", 6: "c0"}, {0: "y", 1: "hn", 2: "cn"}),
    "GRU": ({0: "x", 5: "h0"}, {0: "y", 1: "hn"}),
}
TOLERANCE = TOL  # of the output's magnitude, as export.verify


class Refused(Exception):
    """What the command cannot import, with the fix, in one line."""


def roles(op: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The input and output roles of a graph of ``op`` (LSTM or GRU), in the service's order."""
    ins, outs = PORTS[op]
    return tuple(ins.values()), tuple(outs.values())


@dataclass
class Decision:
    op: str  # LSTM or GRU
    names: dict[str, str]  # role -> the tensor's name in the source graph
    layout: str  # "batch" or "seq"
    layers: int
    hidden: int
    features: int
    outputs: int


# -- reading the graph ----------------------------------------------------------------------


def _consumers(graph: Any) -> dict[str, list[tuple[Any, int]]]:
    out: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name:
                out.setdefault(name, []).append((node, k))
    return out


def _producers(graph: Any) -> dict[str, tuple[Any, int]]:
    return {name: (node, k) for node in graph.node for k, name in enumerate(node.output) if name}


def _roles(start: str, edges: Callable[[str], list[tuple[Any, int, Any]]], op: str, ports: dict[int, str]) -> set[str]:
    """The roles of the ``op`` nodes' ports first met walking the graph from tensor ``start``
    along ``edges(tensor) -> [(node, port, the node's tensors onward)]``."""
    found: set[str] = set()
    seen, todo = {start}, [start]
    while todo:
        for node, k, onward in edges(todo.pop()):
            if node.op_type == op:
                if k in ports:
                    found.add(ports[k])
                continue
            for t in onward:
                if t and t not in seen:
                    seen.add(t)
                    todo.append(t)
    return found


def input_roles(graph: Any, op: str) -> dict[str, set[str]]:
    """Per graph input: the roles of the recurrent node inputs it reaches first on some path."""
    consumers = _consumers(graph)

    def forward(name: str) -> list[tuple[Any, int, Any]]:
        return [(node, k, node.output) for node, k in consumers.get(name, [])]

    return {gi.name: _roles(gi.name, forward, op, PORTS[op][0]) for gi in graph.input}


def output_roles(graph: Any, op: str) -> dict[str, set[str]]:
    """Per graph output: the roles of the recurrent node outputs it comes from first on some path."""
    producers = _producers(graph)

    def backward(name: str) -> list[tuple[Any, int, Any]]:
        return [(*producers[name], producers[name][0].input)] if name in producers else []

    return {go.name: _roles(go.name, backward, op, PORTS[op][1]) for go in graph.output}


def decide_op(graph: Any) -> str:
    """LSTM or GRU: the graph's recurrent operator; Refused for none, a plain RNN, or both."""
    recurrent = {n.op_type for n in graph.node} & {"LSTM", "GRU", "RNN"}
    if "RNN" in recurrent:
        raise Refused("the graph is a plain RNN: the service serves LSTMs and GRUs; export an nn.LSTM or nn.GRU")
    if len(recurrent) != 1:
        what = "both LSTM and GRU nodes" if recurrent else "no LSTM or GRU node"
        raise Refused(f"the graph has {what}: export one nn.LSTM or nn.GRU with torch.onnx.export(..., dynamo=False)")
    return recurrent.pop()


def decide_names(graph: Any, op: str, mapped: dict[str, str]) -> dict[str, str]:
    """role -> tensor name, from ``--map`` first, then from the graph; Refused when a role is
    missing or ambiguous."""
    in_roles, out_roles = roles(op)
    foreign = sorted(set(mapped) - {*in_roles, *out_roles})
    if foreign:
        raise Refused(
            f"--map {', '.join(foreign)}: a {op} has no such tensor (its roles: {', '.join(in_roles + out_roles)})"
        )
    names = dict(mapped)
    ins, outs = input_roles(graph, op), output_roles(graph, op)
    for group, pool in ((in_roles, ins), (out_roles, outs)):
        for role in group:
            if role in names:
                continue
            cands = [n for n, r in pool.items() if r == {role} and n not in names.values()]
            if len(cands) != 1:
                what = "no" if not cands else f"{len(cands)} ({', '.join(cands)})"
                raise Refused(
                    f"{what} tensor(s) found for role {role}: name it with --map {role}=TENSOR "
                    f"(the graph's {'inputs' if role in in_roles else 'outputs'}: {', '.join(pool)})"
                )
            names[role] = cands[0]
    known = {i.name for i in graph.input} | {o.name for o in graph.output}
    unknown = sorted(v for v in names.values() if v not in known)
    if unknown:
        raise Refused(f"--map names {unknown}, which the graph does not have; it has {sorted(known)}")
    extra = sorted({i.name for i in graph.input} - set(names.values()) - {t.name for t in graph.initializer})
    if extra:
        raise Refused(f"the graph takes inputs the service does not send ({extra}): export without them")
    return names


def _dims(value_info: Any) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return dims


def check_dynamic(graph: Any, names: dict[str, str]) -> tuple[int, int, int]:
    """(layers, hidden, features) from the declared shapes; Refused for a static batch or
    sequence axis."""
    info = {v.name: v for v in [*graph.input, *graph.output]}
    x, h0 = _dims(info[names["x"]]), _dims(info[names["h0"]])
    if len(x) != 3 or len(h0) != 3:
        raise Refused(f"x must have 3 dimensions and h0 3 ([layers, batch, hidden]); got {x} and {h0}")
    static = []
    if isinstance(x[0], int) or isinstance(x[1], int):
        static.append(f"{names['x']} {x}")
    if isinstance(h0[1], int):
        static.append(f"{names['h0']} {h0}")
    if static:
        raise Refused(
            f"static shapes ({'; '.join(static)}): export with dynamic batch and sequence axes "
            "(torch.onnx.export(..., dynamic_axes={...}))"
        )
    if not isinstance(x[2], int) or not isinstance(h0[0], int) or not isinstance(h0[2], int):
        raise Refused(f"features, layers and hidden size must be fixed in the graph; got x {x}, h0 {h0}")
    return h0[0], h0[2], x[2]


# -- running it -------------------------------------------------------------------------------


class Runner:
    """The source graph in onnxruntime, called with batch-first arrays whatever its layout:
    ``(x, [h0, c0]) -> (y, [hn, cn])`` (a GRU: ``[h0] -> [hn]``)."""

    def __init__(self, model_bytes: bytes, op: str, names: dict[str, str], layout: str) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 4  # a layout that does not fit is tried and dropped: no error lines
        try:
            self.sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise Refused(
                f"onnxruntime cannot load the graph ({_first_line(e)}): export with opset 14 or newer"
            ) from None
        self.names, self.layout = names, layout
        self.ins, self.outs = roles(op)

    def __call__(self, x: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        n = self.names
        xin = x if self.layout == "batch" else np.ascontiguousarray(x.transpose(1, 0, 2))
        feeds = {n["x"]: xin, **{n[r]: s for r, s in zip(self.ins[1:], state, strict=True)}}
        y, *out = self.sess.run([n[r] for r in self.outs], feeds)
        if self.layout == "seq":
            y = y.transpose(1, 0, 2)
        return y, out

    def zeros(self, layers: int, batch: int, hidden: int) -> list[np.ndarray]:
        return [np.zeros((layers, batch, hidden), np.float32) for _ in self.ins[1:]]


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def decide_layout(run: Runner, shape: tuple[int, int, int]) -> str:
    """``batch`` or ``seq``: the one under which a batch of 2 sequences of 5 steps runs and
    gives ``y`` as ``[2, 5, outputs]`` (tried on ``run``'s session, which either reads)."""
    layers, hidden, features = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, features)).astype(np.float32)
    for layout in ("batch", "seq"):
        run.layout = layout
        try:
            y, (hn, *_) = run(x, run.zeros(layers, 2, hidden))
        except Exception:
            continue
        if y.shape[:2] == (2, 5) and hn.shape == (layers, 2, hidden):
            return layout
    raise Refused("the graph runs neither batch-first nor sequence-first with its declared shapes: set --layout")


def check_chunking(run: Runner, shape: tuple[int, int, int]) -> float:
    """The largest difference, scaled by the output's magnitude, between one pass over 3
    sequences of 12 steps and the same steps in chunks (5, 4, 3 and one at a time), each chunk
    run in batches of other sizes (all, one by one, two then one). Refused above TOLERANCE."""
    layers, hidden, features = shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 12, features)).astype(np.float32)
    y_full, s_full = run(x, run.zeros(layers, 3, hidden))
    scale = max(float(np.abs(y_full).max()), 1e-6)
    worst = 0.0
    for cuts in ((5, 4, 3), (1,) * 12):
        state, ys, t = run.zeros(layers, 3, hidden), [], 0
        for k, n in enumerate(cuts):
            groups = ([0, 1, 2],), ([0], [1], [2]), ([0, 2], [1])
            y = np.zeros((3, n, y_full.shape[2]), np.float32)
            for rows in groups[k % 3]:
                yr, sr = run(np.ascontiguousarray(x[rows, t : t + n]), [s[:, rows] for s in state])
                y[rows] = yr
                for s, part in zip(state, sr, strict=True):
                    s[:, rows] = part
            ys.append(y)
            t += n
        got = np.concatenate(ys, axis=1)
        worst = max(
            worst,
            float(np.abs(got - y_full).max()) / scale,
            *(
                float(np.abs(s - f).max()) / max(float(np.abs(f).max()), 1e-6)
                for s, f in zip(state, s_full, strict=True)
            ),
        )
    if worst > TOLERANCE:
        raise Refused(
            f"chunks of a sequence do not equal the one-pass run ({worst:.2e} of the output's magnitude, over "
            f"{TOLERANCE:g}): the graph carries state outside its state inputs, or is not a recurrent net over "
            "time; export nn.LSTM or nn.GRU with its state as inputs and outputs"
        )
    return worst


# -- writing it -------------------------------------------------------------------------------


def canonical(model: Any, op: str, names: dict[str, str], layout: str) -> Any:
    """The graph with the service's tensor names (and transposes at both ends when it is
    sequence-first), external data folded in."""
    import onnx
    from onnx import helper

    graph = model.graph
    in_roles, out_roles = roles(op)
    rename = {names[r]: r for r in (*in_roles, *out_roles)}
    if layout == "seq":  # the graph's own x and y stay inside; the service's, batch-first, wrap them
        taken = {t for n in graph.node for t in (*n.input, *n.output)} | {v.name for v in graph.initializer}
        for role in ("x", "y"):
            inner = f"{names[role]}__seq_first"
            while inner in taken:
                inner += "_"
            rename[names[role]] = inner
            names = {**names, role: inner}
    for node in graph.node:
        for i, v in enumerate(node.input):
            if v in rename:
                node.input[i] = rename[v]
        for i, v in enumerate(node.output):
            if v in rename:
                node.output[i] = rename[v]
    for vi in [*graph.input, *graph.output]:
        if vi.name in rename:
            vi.name = rename[vi.name]
    if layout == "seq":
        inner_x, inner_y = names["x"], names["y"]  # already renamed in the graph
        x_in = next(i for i in graph.input if i.name == inner_x)
        y_out = next(o for o in graph.output if o.name == inner_y)
        graph.node.insert(0, helper.make_node("Transpose", ["x"], [inner_x], perm=[1, 0, 2], name="import_x_to_seq"))
        graph.node.append(helper.make_node("Transpose", [inner_y], ["y"], perm=[1, 0, 2], name="import_y_to_batch"))
        x_dims, y_dims = _dims(x_in), _dims(y_out)
        new_x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [x_dims[1], x_dims[0], x_dims[2]])
        new_y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [y_dims[1], y_dims[0], y_dims[2]])
        x_in.CopyFrom(new_x)
        y_out.CopyFrom(new_y)
    order_in = {r: k for k, r in enumerate(in_roles)}
    order_out = {r: k for k, r in enumerate(out_roles)}
    ins = sorted(graph.input, key=lambda v: order_in.get(v.name, 99))
    outs = sorted(graph.output, key=lambda v: order_out.get(v.name, 99))
    del graph.input[:]
    graph.input.extend(ins)
    del graph.output[:]
    graph.output.extend(outs)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise Refused(f"the rewritten graph does not check ({_first_line(e)}): report this with the model") from None
    return model


def card(d: Decision, name: str, version: str, digest: str, src: Path, features: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "description": f"imported from {src.name} by lstm-import: {d.op}, {d.layers} layer(s) x {d.hidden}",
        "cell": d.op.lower(),
        "platform": "onnxruntime_onnx",
        "file": "model.onnx",
        "sha256": digest,
        "hidden_size": d.hidden,
        "num_layers": d.layers,
        "n_features": d.features,
        "n_outputs": d.outputs,
        "features": [{"name": f} for f in features],
        "outputs_meaning": [{"name": f"y{i}"} for i in range(d.outputs)],
        "imported": {"source": src.name, "tensors": d.names, "layout": d.layout},
        **card_tensors(d.op.lower(), d.layers, d.hidden, d.features, d.outputs, lengths=False),
    }


def import_model(
    src: Path,
    repository: Path,
    name: str,
    version: str,
    mapped: dict[str, str],
    layout: str | None,
    features: list[str] | None,
) -> tuple[Path, Decision, float]:
    """Check ``src`` and write ``repository/name/version``; Refused (nothing written) otherwise."""
    import onnx

    if not src.is_file():
        raise Refused(f"{src} does not exist")
    target = repository / name / version
    if target.exists():
        raise Refused(f"{target} exists: choose another --version, or remove it first")
    try:
        model = onnx.load(str(src))  # external data (model.onnx.data beside it) loaded too
    except Exception as e:
        raise Refused(f"{src} is not a readable ONNX model ({_first_line(e)}); keep its .data file beside it") from None
    graph = model.graph
    op = decide_op(graph)
    names = decide_names(graph, op, mapped)
    layers, hidden, n_features = check_dynamic(graph, names)
    run = Runner(model.SerializeToString(), op, names, layout or "batch")
    chosen = run.layout = layout or decide_layout(run, (layers, hidden, n_features))
    try:
        y, _ = run(np.zeros((1, 2, n_features), np.float32), run.zeros(layers, 1, hidden))
        if y.ndim != 3:
            raise Refused(f"output {names['y']} has {y.ndim} dimensions; it must be [batch, seq, outputs]")
        worst = check_chunking(run, (layers, hidden, n_features))
    except Refused:
        raise
    except Exception as e:
        raise Refused(
            f"the graph does not run as {'batch' if chosen == 'batch' else 'sequence'}-first with these roles "
            f"({_first_line(e)}): check --layout and --map"
        ) from None
    feats = features or [f"x{i}" for i in range(n_features)]
    if len(feats) != n_features:
        raise Refused(f"--features names {len(feats)} features; the graph takes {n_features}")
    d = Decision(op, names, chosen, layers, hidden, n_features, int(y.shape[2]))
    out = canonical(model, op, names, chosen)
    # staged under a dot directory, which a serving repository scan skips
    with tempfile.TemporaryDirectory(prefix=".lstm-import-", dir=repository if repository.is_dir() else None) as tmp:
        staging = Path(tmp) / version
        staging.mkdir()
        onnx.save(out, str(staging / "model.onnx"))
        written_bytes = (staging / "model.onnx").read_bytes()
        digest = hashlib.sha256(written_bytes).hexdigest()
        # the written graph, run by its new names, gives what the source gives
        written = Runner(written_bytes, op, {r: r for r in ROLES}, "batch")
        check_same(run, written, (layers, hidden, n_features))
        (staging / "model.json").write_text(json.dumps(card(d, name, version, digest, src, feats), indent=2) + "\n")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(target))
    return target, d, worst


def check_same(a: Runner, b: Runner, shape: tuple[int, int, int]) -> None:
    layers, hidden, features = shape
    x = np.random.default_rng(2).standard_normal((2, 3, features)).astype(np.float32)
    (ya, sa), (yb, sb) = a(x, a.zeros(layers, 2, hidden)), b(x, b.zeros(layers, 2, hidden))
    for u, v in zip([ya, *sa], [yb, *sb], strict=True):
        if u.shape != v.shape or not np.allclose(u, v, rtol=0, atol=TOLERANCE * max(float(np.abs(u).max()), 1e-6)):
            raise Refused("the rewritten graph does not give what the source gives: report this with the model")


def _mapping(items: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        role, sep, tensor = item.partition("=")
        if not sep or role not in ROLES or not tensor:
            raise Refused(f"--map {item!r}: give ROLE=TENSOR with ROLE one of {', '.join(ROLES)}")
        out[role] = tensor
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lstm-import", description=__doc__.split("\n\n")[1])
    p.add_argument("src", type=Path, help="the ONNX file (its external data file, if any, beside it)")
    p.add_argument("--repository", type=Path, required=True, help="the model repository (LSTM_MODEL_REPOSITORY)")
    p.add_argument("--name", required=True, help="the model's name in the repository")
    p.add_argument("--version", default="1", help="the version directory (default 1)")
    p.add_argument(
        "--map", action="append", default=[], metavar="ROLE=TENSOR", help="x, h0, c0, y, hn or cn (a GRU: no c0, cn)"
    )
    p.add_argument("--layout", choices=["batch", "seq"], help="x and y batch-first or sequence-first")
    p.add_argument("--features", help="the input features' names, comma separated")
    a = p.parse_args(argv)
    try:
        from service.runtime.repository import NAME_RE

        if not NAME_RE.match(a.name) or not (a.version.isascii() and a.version.isdigit() and int(a.version) >= 1):
            raise Refused(f"--name {a.name!r} / --version {a.version!r}: a name of [A-Za-z0-9_-] and a number from 1")
        features = [f.strip() for f in a.features.split(",")] if a.features else None
        target, d, worst = import_model(a.src, a.repository, a.name, a.version, _mapping(a.map), a.layout, features)
    except Refused as e:
        print(f"lstm-import: {e}", file=sys.stderr)
        return 2
    print(f"imported {a.src} as {target}")
    for role in (r for group in roles(d.op) for r in group):
        print(f"  {role:<3} <- {d.names[role]}")
    print(f"  layout: {'batch-first' if d.layout == 'batch' else 'sequence-first (transposed at both ends)'}")
    print(f"  {d.op}: {d.layers} layer(s), hidden {d.hidden}, {d.features} features in, {d.outputs} outputs")
    print(f"  chunked runs equal the one-pass run to {worst:.1e} of the output's magnitude")
    return 0


if __name__ == "__main__":
    sys.exit(main())
