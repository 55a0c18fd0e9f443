"""Verify an exported model against independent references: ``python -m export.verify DIR``.

A model imported by ``lstm-import`` (its card has ``imported``) gets the checks that hold
for any LSTM or GRU stack with a head of its own: ``numpy = onnxruntime`` on the final states
(:mod:`export.graph_reference` recomputes the stack from the graph's weights),
``stream = one pass`` and ``rows independent`` on y and the states, all scaled by the
magnitude (at least 1). The rest of this page is about the models ``export.train`` writes.

Every check runs on fresh random inputs (realistic feature ranges, non-zero initial
states) for batch sizes 1, 7, 64 and sequence lengths 1, 13, 200:

* ``numpy = onnxruntime``: the numpy cell equations (:mod:`export.reference`), fed the
  ONNX initializers through the ONNX gate layout, match onnxruntime;
* ``numpy = torch``: the same named gates, stacked back in PyTorch's layout into an
  ``nn.LSTM``, run by torch, match the numpy cell equations;
* ``stream = one pass``: a random split of each sequence into chunks, carrying (hn, cn),
  gives the outputs and final state of one pass;
* ``rows independent``: each row of a batched run equals that row run alone;
* ``variable lengths``: a padded batch with per-row ``lengths`` gives each row the outputs
  and final state of its own unpadded run.

Tolerance: 1e-5 max abs error (float32), on h and C as they are and on y in the model's
scaled units ((y - mean) / std). y in MW is ~3e4, where one float32 ulp is already 2e-3,
so an absolute 1e-5 on raw megawatts would test rounding, not correctness; the MW error
is printed too.
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export import reference as ref
from export.data import STEPS_PER_DAY, hour_of_step

TOL = 1e-5
BATCHES = (1, 7, 64)
SEQS = (1, 13, 200)


class VerifyError(Exception):
    """The model directory cannot be verified (missing, incomplete, unreadable)."""


@dataclass
class CheckResult:
    check: str
    batch: int
    seq: int
    max_err: float  # states and scaled outputs
    max_err_mw: float  # outputs in real units

    @property
    def ok(self) -> bool:
        return bool(self.max_err <= TOL)


class Subject:
    """The model under test: its onnxruntime session, card and reference weights."""

    def __init__(self, model_dir: Path, card: dict[str, Any]) -> None:
        import onnx
        import onnxruntime as ort

        from export.onnx_graph import initializers

        onnx_path = model_dir / "model.onnx"
        self.card = card
        try:
            proto = onnx.load(str(onnx_path))
        except Exception as e:  # any unreadable file is the same error to the user
            raise VerifyError(f"cannot read the model in {model_dir}: {e}") from e
        self.layers = int(self.card["num_layers"])
        self.hidden = int(self.card["hidden_size"])
        self.ref = ref.from_onnx(initializers(proto), self.layers)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def ort(self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray, lengths: np.ndarray | None = None):
        feeds = {"x": x, "h0": h0, "c0": c0}
        if lengths is not None:
            feeds["lengths"] = lengths.astype(np.int32)
        return self.sess.run(None, feeds)

    def torch_lstm(self) -> Any:
        """An ``nn.LSTM`` + head holding the reference's named gates in PyTorch's layout."""
        import torch

        n_in = self.ref.layers[0].W["i"].shape[1]
        lstm = torch.nn.LSTM(n_in, self.hidden, num_layers=self.layers, batch_first=True)
        sd = {}
        for k, w in enumerate(self.ref.layers):
            sd[f"weight_ih_l{k}"] = ref.stack_gates(w.W, ref.TORCH_ORDER)
            sd[f"weight_hh_l{k}"] = ref.stack_gates(w.U, ref.TORCH_ORDER)
            sd[f"bias_ih_l{k}"] = ref.stack_gates(w.b, ref.TORCH_ORDER)
            sd[f"bias_hh_l{k}"] = np.zeros_like(sd[f"bias_ih_l{k}"])
        lstm.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in sd.items()})
        return lstm.eval()


def random_inputs(rng: np.random.Generator, batch: int, seq: int, sub: Subject):
    """Features in realistic ranges -- the reading within two standard deviations of the
    training mean (the graph's own scaling), the hour on the model's grid of steps, any day --
    and non-zero initial states."""
    layers, hidden, r = sub.layers, sub.hidden, sub.ref
    steps_per_day = len(r.hour_slots) if r.hour_slots is not None else STEPS_PER_DAY
    x = np.stack(
        [
            rng.uniform(r.mean - 2 * r.std, r.mean + 2 * r.std, (batch, seq)),
            hour_of_step(rng.integers(0, steps_per_day, (batch, seq)), steps_per_day),
            rng.integers(0, 7, (batch, seq)).astype(np.float64),
            *(
                rng.uniform(m - 2 * s, m + 2 * s, (batch, seq))
                for m, s in zip(
                    r.extra_mean if r.extra_mean is not None else [],
                    r.extra_std if r.extra_std is not None else [],
                    strict=True,
                )
            ),
        ],
        axis=-1,
    ).astype(np.float32)
    h0 = rng.uniform(-0.9, 0.9, (layers, batch, hidden)).astype(np.float32)
    c0 = rng.normal(0, 1.5, (layers, batch, hidden)).astype(np.float32)
    return x, h0, c0


def _err(sub: Subject, a: tuple, b: tuple) -> tuple[float, float]:
    """Max abs error over (y, hn, cn): y in scaled units, and y in MW separately."""
    ya, yb = np.asarray(a[0], np.float64), np.asarray(b[0], np.float64)
    y_mw = float(np.max(np.abs(ya - yb))) if ya.size else 0.0
    states = max(float(np.max(np.abs(np.asarray(p, np.float64) - q))) for p, q in zip(a[1:], b[1:], strict=True))
    return max(y_mw / sub.ref.std, states), y_mw


def check_numpy_vs_ort(sub: Subject, x, h0, c0, rng) -> tuple[float, float]:
    return _err(sub, sub.ort(x, h0, c0), ref.run(sub.ref, x, h0, c0))


def check_numpy_vs_torch(sub: Subject, x, h0, c0, rng) -> tuple[float, float]:
    import torch

    lstm = sub.torch_lstm()
    with torch.no_grad():
        out, (hn, cn) = lstm(
            torch.from_numpy(ref.preprocess(x, sub.ref).astype(np.float32)),
            (torch.from_numpy(h0), torch.from_numpy(c0)),
        )
    r = sub.ref
    head = out.numpy().astype(np.float64) @ r.head_w.T + r.head_b
    y = r.skip * np.asarray(x, np.float64)[..., 0:1] + r.offset + r.out_scale * head
    return _err(sub, (y, hn.numpy(), cn.numpy()), ref.run(sub.ref, x, h0, c0))


def random_chunks(rng: np.random.Generator, seq: int) -> list[int]:
    """Split ``seq`` steps into 1 to 6 chunks of random sizes."""
    if seq == 1:
        return [1]
    n_cuts = min(seq - 1, int(rng.integers(1, 6)))
    cuts = np.sort(rng.choice(seq - 1, size=n_cuts, replace=False) + 1)
    edges = [0, *cuts.tolist(), seq]
    return [b - a for a, b in itertools.pairwise(edges)]


def check_stream(sub: Subject, x, h0, c0, rng) -> tuple[float, float]:
    whole = sub.ort(x, h0, c0)
    h, c, ys, t = h0, c0, [], 0
    for n in random_chunks(rng, x.shape[1]):
        y, h, c = sub.ort(x[:, t : t + n], h, c)
        ys.append(y)
        t += n
    return _err(sub, whole, (np.concatenate(ys, axis=1), h, c))


def check_rows(sub: Subject, x, h0, c0, rng) -> tuple[float, float]:
    batched = sub.ort(x, h0, c0)
    rows = [sub.ort(x[b : b + 1], h0[:, b : b + 1], c0[:, b : b + 1]) for b in range(x.shape[0])]
    alone = tuple(np.concatenate([r[i] for r in rows], axis=0 if i == 0 else 1) for i in range(3))
    return _err(sub, batched, alone)


def check_lengths(sub: Subject, x, h0, c0, rng) -> tuple[float, float]:
    batch, seq = x.shape[:2]
    lengths = rng.integers(1, seq + 1, batch)
    lengths[rng.integers(batch)] = seq  # one full-length row
    padded = x.copy()
    for b, n in enumerate(lengths):
        padded[b, n:] = rng.uniform(-1e4, 1e4, (seq - n, x.shape[2])) * (sub.ref.std / 5e3)  # junk to ignore
    y, hn, cn = sub.ort(padded, h0, c0, lengths)
    worst, worst_mw = 0.0, 0.0
    for b, n in enumerate(lengths):
        own = sub.ort(x[b : b + 1, :n], h0[:, b : b + 1], c0[:, b : b + 1])
        e, e_mw = _err(sub, (y[b : b + 1, :n], hn[:, b : b + 1], cn[:, b : b + 1]), own)
        worst, worst_mw = max(worst, e), max(worst_mw, e_mw)
    return worst, worst_mw


CHECKS = {
    "numpy = onnxruntime": check_numpy_vs_ort,
    "numpy = torch": check_numpy_vs_torch,
    "stream = one pass": check_stream,
    "rows independent": check_rows,
    "variable lengths": check_lengths,
}


# -- models imported by lstm-import (any LSTM or GRU stack, any head) ---------------------------


def _scaled(a: np.ndarray, b: np.ndarray) -> float:
    """Max abs difference over the magnitude of ``b`` (at least 1: h is bounded by 1)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b))) / max(1.0, float(np.max(np.abs(b))))


class Imported:
    """A model version written by ``lstm-import``: run by its service names (``x``, ``h0``
    [, ``c0``] -> ``y``, ``hn`` [, ``cn``]); its recurrent stack recomputed by
    :mod:`export.graph_reference` from the graph's own weights."""

    def __init__(self, model_dir: Path, card: dict[str, Any]) -> None:
        import onnx

        from export import graph_reference
        from export.lstm_import import ROLES, Runner

        self.card = card
        self.layers, self.hidden = int(card["num_layers"]), int(card["hidden_size"])
        self.features = int(card["n_features"])
        proto = onnx.load(str(model_dir / "model.onnx"))  # read once: the reference and the session
        try:
            self.stack = graph_reference.layers(proto)
        except graph_reference.NotStacked as e:
            raise VerifyError(f"{model_dir}: the numpy reference cannot recompute this graph: {e}") from None
        if len(self.stack) != self.layers:
            raise VerifyError(
                f"{model_dir}: {len(self.stack)} recurrent node(s) in the graph, the card says {self.layers}"
            )
        # the written graph carries the service's names and is batch-first: the importer's runner
        self.ort = Runner(
            proto.SerializeToString(), str(card.get("cell", "lstm")).upper(), {r: r for r in ROLES}, "batch"
        )

    def inputs(self, rng: np.random.Generator, batch: int, seq: int) -> tuple[np.ndarray, list[np.ndarray]]:
        x = rng.standard_normal((batch, seq, self.features)).astype(np.float32)
        shape = (self.layers, batch, self.hidden)
        state = [rng.uniform(-0.9, 0.9, shape).astype(np.float32)]
        if len(self.ort.ins) == 3:  # x, h0, c0: an LSTM's cell state too
            state.append(rng.normal(0, 1.5, shape).astype(np.float32))
        return x, state


def imported_numpy(sub: Imported, x: np.ndarray, state: list[np.ndarray], rng: Any) -> tuple[float, float]:
    from export import graph_reference

    _, got = sub.ort(x, state)
    want = graph_reference.run(sub.stack, x, state)
    return max(_scaled(g, w) for g, w in zip(got, want, strict=True)), 0.0


def imported_stream(sub: Imported, x: np.ndarray, state: list[np.ndarray], rng: Any) -> tuple[float, float]:
    y_all, s_all = sub.ort(x, state)
    ys, s, t = [], state, 0
    for n in random_chunks(rng, x.shape[1]):
        y, s = sub.ort(np.ascontiguousarray(x[:, t : t + n]), s)
        ys.append(y)
        t += n
    y = np.concatenate(ys, axis=1)
    errs = [_scaled(y, y_all), *(_scaled(a, b) for a, b in zip(s, s_all, strict=True))]
    return max(errs), float(np.max(np.abs(y - y_all)))


def imported_rows(sub: Imported, x: np.ndarray, state: list[np.ndarray], rng: Any) -> tuple[float, float]:
    y_all, s_all = sub.ort(x, state)
    worst, worst_y = 0.0, 0.0
    for b in range(x.shape[0]):
        y, s = sub.ort(x[b : b + 1], [p[:, b : b + 1] for p in state])
        errs = [_scaled(y, y_all[b : b + 1]), *(_scaled(a, p[:, b : b + 1]) for a, p in zip(s, s_all, strict=True))]
        worst, worst_y = max(worst, *errs), max(worst_y, float(np.max(np.abs(y - y_all[b : b + 1]))))
    return worst, worst_y


IMPORTED_CHECKS = {
    "numpy = onnxruntime": imported_numpy,  # the final states: the head is the user's own
    "stream = one pass": imported_stream,
    "rows independent": imported_rows,
}


def run_imported(model_dir: Path, card: dict[str, Any], seed: int) -> list[CheckResult]:
    sub = Imported(model_dir, card)
    rng = np.random.default_rng(seed)
    results = []
    for name, fn in IMPORTED_CHECKS.items():
        for batch in BATCHES:
            for seq in SEQS:
                x, state = sub.inputs(rng, batch, seq)
                err, err_y = fn(sub, x, state, rng)
                results.append(CheckResult(name, batch, seq, err, err_y))
    return results


def _card(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "model.json"
    for p in (model_dir / "model.onnx", path):
        if not p.is_file():
            raise VerifyError(f"{p} does not exist: is {model_dir} a model version directory?")
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # any unreadable file is the same error to the user
        raise VerifyError(f"cannot read {path}: {e}") from e
    return card if isinstance(card, dict) else {}


def run_checks(model_dir: Path, seed: int = 0, checks: dict | None = None) -> list[CheckResult]:
    card = _card(model_dir)
    if "imported" in card and checks is None:
        return run_imported(model_dir, card, seed)
    sub = Subject(model_dir, card)
    rng = np.random.default_rng(seed)
    results = []
    for name, fn in (checks or CHECKS).items():
        for batch in BATCHES:
            for seq in SEQS:
                x, h0, c0 = random_inputs(rng, batch, seq, sub)
                err, err_mw = fn(sub, x, h0, c0, rng)
                results.append(CheckResult(name, batch, seq, err, err_mw))
    return results


def format_table(results: list[CheckResult]) -> str:
    lines = [f"{'check':<22}{'batch':>6}{'seq':>6}{'max abs err':>14}{'(y, units)':>12}{'tol':>9}  result"]
    for r in results:
        lines.append(
            f"{r.check:<22}{r.batch:>6}{r.seq:>6}{r.max_err:>14.2e}{r.max_err_mw:>12.2e}{TOL:>9.0e}  "
            + ("ok" if r.ok else "FAIL")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m export.verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model_dir", type=Path, help="a model version directory, e.g. models/demand/1")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        results = run_checks(args.model_dir, args.seed)
    except VerifyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(results))
    failed = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed (tolerance {TOL:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
