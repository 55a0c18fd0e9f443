"""A model that loads, serves: tensors are read by name, never by position (a graph that lists
its outputs as ``hn, cn, y`` once loaded, showed READY and answered every step with 500), and
a graph that cannot serve (static shapes) is refused at start-up with one line and exit 2."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from harness.paths import DEFAULT_MODEL
from harness.reference import Offline, random_steps
from harness.server import run_to_exit, running_server

pytestmark = pytest.mark.integration


def variant(repo: Path, name: str, change: Callable[[onnx.ModelProto], None]) -> Path:
    """``repo/name/1``: the default model with ``change`` made to its graph, and its card."""
    target = repo / name / "1"
    target.mkdir(parents=True)
    graph = onnx.load(str(DEFAULT_MODEL / "model.onnx"))
    change(graph)
    onnx.save(graph, str(target / "model.onnx"))
    card = json.loads((DEFAULT_MODEL / "model.json").read_text())
    card |= {"name": name, "version": "1", "sha256": hashlib.sha256((target / "model.onnx").read_bytes()).hexdigest()}
    (target / "model.json").write_text(json.dumps(card))
    return target


def _outputs_hn_cn_y(graph: onnx.ModelProto) -> None:
    outputs = {o.name: o for o in graph.graph.output}
    order = [outputs[n] for n in ("hn", "cn", "y")]
    del graph.graph.output[:]
    graph.graph.output.extend(order)


def _static_shapes(graph: onnx.ModelProto) -> None:
    """As an export without dynamic axes: batch and sequence fixed to 1."""
    for i in graph.graph.input:
        for d in i.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = 1


def reordered(repo: Path) -> Path:
    return variant(repo, "reordered", _outputs_hn_cn_y)


def test_a_model_whose_outputs_come_in_another_order_serves_exactly(tmp_path: Path, offline: Offline):
    model_dir = reordered(tmp_path)
    got_order = [o.name for o in onnx.load(str(model_dir / "model.onnx")).graph.output]
    assert got_order == ["hn", "cn", "y"]
    x = random_steps(np.random.default_rng(31), 5)
    with running_server(repo=tmp_path) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        sid = c.post("/v1/sessions", json={"model": "reordered"}).json()["session_id"]
        r = c.post(f"/v1/sessions/{sid}/step", json={"inputs": x.tolist()})
        assert r.status_code == 200, r.text
        offline.assert_outputs_close(np.array(r.json()["outputs"]), offline.run(x)[0])
        r = c.post("/v1/models/reordered/predict", json={"inputs": [x.tolist()]})
        assert r.status_code == 200, r.text
        offline.assert_outputs_close(np.array(r.json()["outputs"][0]), offline.run(x)[0])


def test_a_static_shape_model_is_refused_at_start_with_one_line_and_exit_2(tmp_path: Path):
    variant(tmp_path, "static", _static_shapes)
    done = run_to_exit(tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert "static/1" in line and "dynamic batch and sequence axes" in line, line
