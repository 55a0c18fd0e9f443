"""``lstm-import`` on models a user exports from torch, as a user would (LSTMs and a GRU):
imported next to the default model, then streamed exactly (against onnxruntime on the user's
own file) over v1 sessions in chunks, v2 sequences, gRPC and WebSocket; and what it refuses,
with exit 2, one line and nothing written."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as grpcclient
from websockets.sync.client import connect

from harness.paths import DEFAULT_MODEL, ROOT
from harness.redis import redis_server
from harness.server import run_to_exit, running_server

pytestmark = pytest.mark.integration

FEATURES, HIDDEN, LAYERS, OUTPUTS = 5, 32, 2, 2


class Net(torch.nn.Module):
    """A user's forecaster: an LSTM and a linear head, state in and out."""

    def __init__(self, batch_first: bool, order: tuple[str, ...] = ("y", "hn", "cn")) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lstm = torch.nn.LSTM(FEATURES, HIDDEN, LAYERS, batch_first=batch_first)
        self.head = torch.nn.Linear(HIDDEN, OUTPUTS)
        self.order = order

    def forward(self, x, h, c):
        out, (hn, cn) = self.lstm(x, (h, c))
        got = {"y": self.head(out), "hn": hn, "cn": cn}
        return tuple(got[k] for k in self.order)


class GruNet(torch.nn.Module):
    """A user's GRU forecaster (one state tensor, h), with a linear head."""

    def __init__(self, batch_first: bool, cell: type = torch.nn.GRU) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.rnn = cell(FEATURES, HIDDEN, LAYERS, batch_first=batch_first)
        self.head = torch.nn.Linear(HIDDEN, OUTPUTS)

    def forward(self, x, h):
        out, hn = self.rnn(x, h)
        return self.head(out), hn


def export(
    path: Path, batch_first: bool, order=("y", "hn", "cn"), dynamic: bool = True, gru: bool = False, cell=None
) -> Path:
    """What a user writes: torch.onnx.export with names of their own choosing."""
    names = {"y": "forecast", "hn": "h_out", "cn": "c_out"}
    x = torch.randn(3, 4, FEATURES) if batch_first else torch.randn(4, 3, FEATURES)
    h = torch.zeros(LAYERS, 3, HIDDEN)
    if gru or cell is not None:
        net: torch.nn.Module = GruNet(batch_first, cell or torch.nn.GRU)
        args, in_names, out_names = (x, h), ["readings", "h_in"], ["forecast", "h_out"]
    else:
        net = Net(batch_first, order)
        args, in_names, out_names = (x, h, h.clone()), ["readings", "h_in", "c_in"], [names[k] for k in order]
    axes = {"readings": {0: "a", 1: "b"}, "forecast": {0: "a", 1: "b"}}
    axes |= {n: {1: "batch"} for n in [*in_names[1:], *out_names] if n not in axes}
    torch.onnx.export(
        net.eval(),
        args,
        str(path),
        input_names=in_names,
        output_names=out_names,
        dynamic_axes=axes if dynamic else None,
        dynamo=False,
        opset_version=17,
    )
    return path


def lstm_import(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lstm-import")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "export.lstm_import"]
    return subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def reference(src: Path, x: np.ndarray, batch_first: bool) -> np.ndarray:
    """The user's own file in onnxruntime, one pass from zeros: ``x [T, F]`` -> ``y [T, O]``."""
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    z = np.zeros((LAYERS, 1, HIDDEN), np.float32)
    xin = x[None] if batch_first else x[:, None]
    states = {i.name: z for i in sess.get_inputs() if i.name != "readings"}  # h_in, and c_in for an LSTM
    y = sess.run(["forecast"], {"readings": xin, **states})[0]
    return y[0] if batch_first else y[:, 0]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The default model and four imported ones: LSTMs batch-first, sequence-first, and one whose
    outputs come in the order hn, cn, y; and a sequence-first GRU."""
    tmp = tmp_path_factory.mktemp("import")
    repo = tmp / "repo"
    shutil.copytree(DEFAULT_MODEL.parent, repo / DEFAULT_MODEL.parent.name)
    for name, batch_first, order in (
        ("mine", True, ("y", "hn", "cn")),
        ("mineseq", False, ("y", "hn", "cn")),
        ("reordered", True, ("hn", "cn", "y")),
        ("mygru", False, ()),
    ):
        src = export(tmp / f"{name}.onnx", batch_first, order, gru=not order)
        done = lstm_import(str(src), "--repository", str(repo), "--name", name, "--features", "a,b,c,d,e")
        assert done.returncode == 0, done.stderr
        assert "x   <- readings" in done.stdout and "hn  <- h_out" in done.stdout, done.stdout
        assert ("cn  <- c_out" in done.stdout) == bool(order), done.stdout
        card = json.loads((repo / name / "1" / "model.json").read_text())
        assert card["imported"]["layout"] == ("batch" if batch_first else "seq")
        assert card["cell"] == ("lstm" if order else "gru")
        assert [f["name"] for f in card["features"]] == list("abcde")
    return repo


CASES = [("mine", True), ("mineseq", False), ("reordered", True), ("mygru", False)]


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_imported_models_stream_exactly_on_every_protocol(repo: Path, store: str):
    x = np.random.default_rng(3).standard_normal((7, FEATURES)).astype(np.float32)
    with redis_server() as redis:
        env = {"LSTM_SESSION_STORE": store, "LSTM_REDIS_URL": redis.url}
        with running_server(env, repo=repo) as s, httpx.Client(base_url=s.url, timeout=30) as c:
            assert {m["name"] for m in c.get("/v1/models").json()["models"]} >= {"demand", "mine", "mineseq", "mygru"}
            for name, batch_first in CASES:
                want = reference(repo.parent / f"{name}.onnx", x, batch_first)
                scale = float(np.abs(want).max())
                # v1 session in chunks
                sid = c.post("/v1/sessions", json={"model": name}).json()["session_id"]
                got: list = []
                for a, b in ((0, 3), (3, 4), (4, 7)):
                    r = c.post(f"/v1/sessions/{sid}/step", json={"inputs": x[a:b].tolist(), "expected_step": a})
                    assert r.status_code == 200, r.text
                    got += r.json()["outputs"]
                assert np.abs(np.array(got) - want).max() <= 1e-5 * scale, name
                # v2 sequence, batch-first [1, T, F] whatever the graph's layout
                ys = []
                for a, b in ((0, 2), (2, 7)):
                    body = {
                        "inputs": [
                            {"name": "x", "datatype": "FP32", "shape": [1, b - a, FEATURES], "data": x[a:b].tolist()}
                        ],
                        "parameters": {"sequence_id": f"{name}-{store}", "sequence_start": a == 0},
                    }
                    r = c.post(f"/v2/models/{name}/infer", json=body)
                    assert r.status_code == 200, r.text
                    ys.append(np.array(r.json()["outputs"][0]["data"]).reshape(b - a, OUTPUTS))
                assert np.abs(np.concatenate(ys) - want).max() <= 1e-5 * scale, name
                # gRPC
                g = grpcclient.InferenceServerClient(s.grpc)
                ys = []
                for a, b in ((0, 4), (4, 7)):
                    i = grpcclient.InferInput("x", [1, b - a, FEATURES], "FP32")
                    i.set_data_from_numpy(x[None, a:b])
                    ys.append(g.infer(name, [i], sequence_id=f"g-{name}", sequence_start=a == 0).as_numpy("y")[0])
                g.close()
                assert np.abs(np.concatenate(ys) - want).max() <= 1e-5 * scale, name
                # WebSocket, one reading per message
                sid = c.post("/v1/sessions", json={"model": name}).json()["session_id"]
                with connect(s.url.replace("http://", "ws://") + f"/v1/sessions/{sid}/stream") as ws:
                    ys = []
                    for t in range(len(x)):
                        ws.send(json.dumps({"inputs": [x[t].tolist()], "expected_step": t}))
                        ys += json.loads(ws.recv(timeout=30))["outputs"]
                assert np.abs(np.array(ys) - want).max() <= 1e-5 * scale, name


def test_a_gru_keeps_h_only_on_every_surface(repo: Path):
    """A GRU's state is h alone: predict returns hn and no cn, c0 is refused naming the model's
    state, snapshots carry h only and import back to the same stream, the Triton config lists
    one state pair; an LSTM's c0 and snapshot c still work beside it."""
    x = np.random.default_rng(5).standard_normal((6, FEATURES)).astype(np.float32)
    want = reference(repo.parent / "mygru.onnx", x, batch_first=False)
    scale = float(np.abs(want).max())
    zeros = np.zeros((LAYERS, HIDDEN)).tolist()
    with running_server(repo=repo) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/models/mygru/predict", json={"inputs": [x.tolist()]})
        assert r.status_code == 200, r.text
        assert "cn" not in r.json() and np.array(r.json()["hn"]).shape == (LAYERS, 1, HIDDEN)
        assert np.abs(np.array(r.json()["outputs"][0]) - want).max() <= 1e-5 * scale
        r = c.post("/v1/models/mygru/predict", json={"inputs": [x.tolist()], "c0": [[[0.0] * HIDDEN]] * LAYERS})
        assert r.status_code == 400 and "c0: this model (GRU) keeps h0 only" in r.json()["error"], r.text
        r = c.post("/v1/sessions", json={"model": "mygru", "h0": zeros, "c0": zeros})
        assert r.status_code == 400 and "GRU" in r.json()["error"], r.text
        # a snapshot after 3 steps, imported as a new session, continues the stream exactly
        sid = c.post("/v1/sessions", json={"model": "mygru", "h0": zeros}).json()["session_id"]
        first = c.post(f"/v1/sessions/{sid}/step", json={"inputs": x[:3].tolist()}).json()["outputs"]
        snap = c.get(f"/v1/sessions/{sid}/snapshot").json()
        assert "c" not in snap and np.array(snap["h"]).shape == (LAYERS, HIDDEN)
        assert c.post("/v1/sessions/import", json={**snap, "c": zeros}).status_code == 400
        copy = c.post("/v1/sessions/import", json=snap).json()["session_id"]
        rest = c.post(f"/v1/sessions/{copy}/step", json={"inputs": x[3:].tolist()}).json()["outputs"]
        assert np.abs(np.array(first + rest) - want).max() <= 1e-5 * scale
        # the LSTM beside it still takes and gives both
        snap = c.get(f"/v1/sessions/{c.post('/v1/sessions', json={'model': 'mine'}).json()['session_id']}/snapshot")
        assert {"h", "c"} <= set(snap.json())
        r = c.post(
            "/v2/models/mygru/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 6, FEATURES], "data": x.ravel().tolist()}]},
        )
        assert [o["name"] for o in r.json()["outputs"]] == ["y", "hn"], r.text
        r = c.post(
            "/v2/models/mygru/infer",
            json={
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [1, 1, FEATURES], "data": x[0].tolist()},
                    {"name": "c0", "datatype": "FP32", "shape": [LAYERS, 1, HIDDEN], "data": [0.0] * (LAYERS * HIDDEN)},
                ]
            },
        )
        assert r.status_code == 400 and "takes x (and optionally h0)" in r.json()["error"], r.text
        state = c.get("/v2/models/mygru/config").json()["sequence_batching"]["state"]
        assert [(p["input_name"], p["output_name"]) for p in state] == [("h0", "hn")]


def test_external_data_is_folded_into_one_file(tmp_path: Path):
    """torch's newer exporter writes model.onnx plus model.onnx.data: the import reads both and
    writes one self-contained model.onnx."""
    src = export(tmp_path / "m.onnx", True)
    model = onnx.load(str(src))
    split = tmp_path / "split"
    split.mkdir()
    onnx.save(
        model, str(split / "model.onnx"), save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    assert (split / "model.onnx.data").stat().st_size > 10_000
    done = lstm_import(str(split / "model.onnx"), "--repository", str(tmp_path / "repo"), "--name", "split")
    assert done.returncode == 0, done.stderr
    written = tmp_path / "repo" / "split" / "1"
    assert sorted(p.name for p in written.iterdir()) == ["model.json", "model.onnx"]
    ort.InferenceSession(str(written / "model.onnx"), providers=["CPUExecutionProvider"])  # alone, no .data


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: export(p, True, dynamic=False), "static shapes"),
        (lambda p: export(p, True, cell=torch.nn.RNN), "is a plain RNN"),
    ],
)
def test_what_it_refuses_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, make, reason: str):
    src = make(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    done = lstm_import(str(src), "--repository", str(repo), "--name", "refused")
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lstm-import: ") and reason in lines[0], lines
    assert not (repo / "refused").exists()


def test_a_static_export_placed_by_hand_is_refused_at_start(tmp_path: Path):
    """The same static file put in a repository without the import: one line, exit 2."""
    repo = tmp_path / "repo"
    (repo / "static" / "1").mkdir(parents=True)
    src = export(repo / "static" / "1" / "model.onnx", True, dynamic=False)
    # the card the import would write, with the graph's own names mapped by hand
    card = json.loads((DEFAULT_MODEL / "model.json").read_text())
    card |= {"name": "static", "version": "1", "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}
    card |= {"hidden_size": HIDDEN, "num_layers": LAYERS, "n_features": FEATURES, "n_outputs": OUTPUTS}
    card.pop("features")
    (repo / "static" / "1" / "model.json").write_text(json.dumps(card))
    done = run_to_exit(repo)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert [ln for ln in done.stderr.splitlines() if ln.startswith("error:")], done.stderr[-2000:]


def test_a_model_that_cannot_serve_is_refused_by_the_repository_api_with_400(tmp_path: Path):
    """Loaded through the repository API instead of at start-up: 400 with the reason, and the
    model already served goes on serving."""
    repo = tmp_path / "repo"
    shutil.copytree(DEFAULT_MODEL.parent, repo / DEFAULT_MODEL.parent.name)
    with running_server({"LSTM_MODEL_CONTROL_MODE": "explicit"}, repo=repo) as s, httpx.Client(base_url=s.url) as c:
        (repo / "static" / "1").mkdir(parents=True)
        src = export(repo / "static" / "1" / "model.onnx", True, dynamic=False)
        card = {"sha256": hashlib.sha256(src.read_bytes()).hexdigest(), "hidden_size": HIDDEN, "num_layers": LAYERS}
        card |= {"n_features": FEATURES, "n_outputs": OUTPUTS}
        (repo / "static" / "1" / "model.json").write_text(json.dumps(card))
        r = c.post("/v2/repository/models/static/load", timeout=60)
        assert r.status_code == 400 and "model.onnx" in r.json()["error"], r.text
        assert "\n" not in r.json()["error"]
        r = c.post("/v1/models/demand/predict", json={"inputs": [[[30500.0, 8.0, 2.0]]]})
        assert r.status_code == 200, r.text


def test_a_sequence_first_graph_already_named_like_the_service_imports(tmp_path: Path):
    """torch's default layout with the service's own names: the graph's x and y are renamed
    inside, and the written model, batch-first, gives what the source gives."""
    net = Net(batch_first=False).eval()
    x, h = torch.randn(4, 3, FEATURES), torch.zeros(LAYERS, 3, HIDDEN)
    axes = {"x": {0: "t", 1: "b"}, "y": {0: "t", 1: "b"}} | {n: {1: "b"} for n in ("h0", "c0", "hn", "cn")}
    src = tmp_path / "named.onnx"
    torch.onnx.export(
        net,
        (x, h, h),
        str(src),
        input_names=["x", "h0", "c0"],
        output_names=["y", "hn", "cn"],
        dynamic_axes=axes,
        dynamo=False,
        opset_version=17,
    )
    done = lstm_import(str(src), "--repository", str(tmp_path / "repo"), "--name", "named")
    assert done.returncode == 0, done.stderr
    steps = np.random.default_rng(4).standard_normal((7, FEATURES)).astype(np.float32)
    z = np.zeros((LAYERS, 1, HIDDEN), np.float32)
    want = ort.InferenceSession(str(src)).run(["y"], {"x": steps[:, None], "h0": z, "c0": z})[0][:, 0]
    written = ort.InferenceSession(str(tmp_path / "repo" / "named" / "1" / "model.onnx"))
    got = written.run(["y"], {"x": steps[None], "h0": z, "c0": z})[0][0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
