"""Triton's model configuration and statistics extensions, and the real perf_analyzer run
against a live server with exactly the flags docs/clients.md gives."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import json_format

from service.api.protocol.model_config import model_config
from service.config import Settings
from service.runtime.repository import read_card
from tests.conftest import ROOT
from tests.service.conftest import Server, model_shape, random_steps, running_server

pytestmark = pytest.mark.integration

ENV = {
    "LSTM_MAX_BATCH_SIZE": "32",
    "LSTM_MAX_QUEUE_DELAY_MS": "3.5",
    "LSTM_SESSION_TTL_S": "600",
    "LSTM_INFERENCE_WORKERS": "2",
}


@pytest.fixture(scope="module")
def tserver() -> Iterator[Server]:
    with running_server(ENV) as s:
        yield s


@pytest.fixture
def http(tserver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tserver.url, timeout=30) as c:
        yield c


def test_model_config_has_triton_fields_from_the_real_settings(tserver, http):
    c = httpclient.InferenceServerClient(tserver.url.removeprefix("http://"))
    config = c.get_model_config("demand")
    assert config == http.get("/v2/models/demand/versions/1/config").json()
    assert config["name"] == "demand" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 32
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1, 3]}]
    assert config["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [-1, 1]}]
    assert config["instance_group"][0]["kind"] == "KIND_CPU" and config["instance_group"][0]["count"] == 2
    seq = config["sequence_batching"]
    assert seq["max_sequence_idle_microseconds"] == 600_000_000
    assert seq["oldest"]["max_queue_delay_microseconds"] == 3500
    assert seq["oldest"]["preferred_batch_size"] == [32]
    layers, hidden = model_shape()
    assert [(s["input_name"], s["output_name"], s["dims"]) for s in seq["state"]] == [
        ("h0", "hn", [layers, hidden]),
        ("c0", "cn", [layers, hidden]),
    ]
    assert all(s["initial_state"][0]["zero_data"] for s in seq["state"])
    # scheduling_choice is a oneof in model_config.proto: the stateless view has dynamic_batching
    assert "dynamic_batching" not in config
    view = c.get_model_config("demand.stateless")
    assert view["name"] == "demand.stateless" and "sequence_batching" not in view
    assert view["dynamic_batching"] == {"preferred_batch_size": [32], "max_queue_delay_microseconds": 3500}
    assert c.get_model_metadata("demand.stateless")["inputs"] == c.get_model_metadata("demand")["inputs"]
    assert http.get("/v2/models/nope/config").status_code == 404
    assert http.get("/v2/models/demand/versions/9/config").status_code == 404
    c.close()


def _model_config_proto():
    """Triton's ModelConfig message, from the model_config.proto that tritonclient ships
    (loaded by path: ``tritonclient.grpc``'s package would import grpcio)."""
    spec = importlib.util.find_spec("tritonclient")
    assert spec and spec.origin
    path = Path(spec.origin).parent / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert mod_spec and mod_spec.loader
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.ModelConfig


@pytest.mark.parametrize("model", ["demand", "demand.stateless"])
def test_model_config_parses_as_tritons_model_config_proto(http, model):
    config = http.get(f"/v2/models/{model}/config").json()
    message = json_format.ParseDict(config, _model_config_proto()())  # unknown field names fail here
    back = json_format.MessageToDict(message, preserving_proto_field_name=True)
    assert back["name"] == model and back["input"][0]["data_type"] == "TYPE_FP32"
    assert back["instance_group"][0]["kind"] == "KIND_CPU"
    assert ("sequence_batching" in back) != ("dynamic_batching" in back)


def _infer(http: httpx.Client, model: str, x: np.ndarray, **params) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    if params:
        body["parameters"] = params
    return http.post(f"/v2/models/{model}/infer", json=body)


def test_sequence_replies_carry_y_only_unless_the_state_is_asked_for(http, offline):
    x = random_steps(np.random.default_rng(5), 6)
    first = _infer(http, "demand", x[None, :3], sequence_id=501, sequence_start=True)
    assert first.status_code == 200, first.text
    assert [o["name"] for o in first.json()["outputs"]] == ["y"]
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3, 3], "data": x[3:].ravel().tolist()}],
        "outputs": [{"name": "y"}, {"name": "hn"}],
        "parameters": {"sequence_id": 501, "sequence_end": True},
    }
    second = http.post("/v2/models/demand/infer", json=body).json()
    assert [o["name"] for o in second["outputs"]] == ["y", "hn"]
    want, state = offline.run(x)
    y = np.concatenate(
        [np.reshape(first.json()["outputs"][0]["data"], (3, 1)), np.reshape(second["outputs"][0]["data"], (3, 1))]
    )
    offline.assert_outputs_close(y, want)
    assert np.max(np.abs(np.reshape(second["outputs"][1]["data"], (offline.layers, offline.hidden)) - state[0])) <= 1e-5
    # a stateless reply still returns the final state for client-carried state
    stateless = _infer(http, "demand", x[None]).json()
    assert [o["name"] for o in stateless["outputs"]] == ["y", "hn", "cn"]
    # the stateless view takes no sequences
    r = _infer(http, "demand.stateless", x[None, :1], sequence_id=9, sequence_start=True)
    assert r.status_code == 400 and "stateless view" in r.json()["error"]
    view = _infer(http, "demand.stateless", np.stack([x, x]))
    assert view.status_code == 200 and view.json()["model_name"] == "demand.stateless"


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the /metrics text (0 when it is not there yet)."""
    sel = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    m = re.search("^" + re.escape(name + ("{" + sel + "}" if sel else "")) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _stats(http: httpx.Client) -> dict:
    (s,) = http.get("/v2/models/demand/versions/1/stats").json()["model_stats"]
    return s


def test_statistics_count_known_traffic_and_agree_with_metrics(http):
    rng = np.random.default_rng(6)
    before = _stats(http)
    # known traffic, one request at a time: 4 sequence steps of 1 row, 2 predicts of 3 rows,
    # one step refused in the batch (409: wrong expected_step)
    x = random_steps(rng, 4)
    for t in range(4):
        r = _infer(http, "demand", x[None, t : t + 1], sequence_id="stats", sequence_start=t == 0, sequence_end=t == 3)
        assert r.status_code == 200, r.text
    for _ in range(2):
        assert _infer(http, "demand", np.stack([random_steps(rng, 5) for _ in range(3)])).status_code == 200
    sid = http.post("/v1/sessions", json={"model": "demand"}).json()["session_id"]
    assert (
        http.post(f"/v1/sessions/{sid}/step", json={"inputs": [[30000, 1, 2]], "expected_step": 5}).status_code == 409
    )
    after = _stats(http)
    text = http.get("/metrics").text

    def delta(path: str) -> int:
        a, b = after, before
        for k in path.split("."):
            a, b = a[k], b[k]
        return a - b

    assert delta("inference_stats.success.count") == 6
    assert delta("inference_stats.fail.count") == 1
    assert delta("inference_stats.queue.count") == 7
    assert delta("inference_stats.compute_infer.count") == 6
    assert delta("execution_count") == 6 and delta("inference_count") == 4 + 2 * 3
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    sizes_before = {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}
    assert sizes[3] - sizes_before.get(3, 0) == 2 and sizes[1] - sizes_before.get(1, 0) == 4
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0
    for phase in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        d = after["inference_stats"][phase]
        assert d["ns"] >= 0 and (d["count"] == 0) == (d["ns"] == 0), phase

    # the same numbers as /metrics, exactly
    m = "demand/1"
    st = after["inference_stats"]
    for outcome in ("success", "fail"):
        assert st[outcome]["count"] == _metric(text, "lstm_inference_requests_total", model=m, outcome=outcome)
        assert st[outcome]["ns"] == round(
            _metric(text, "lstm_inference_request_seconds_total", model=m, outcome=outcome) * 1e9
        )
    assert st["queue"]["count"] == _metric(text, "lstm_queue_wait_seconds_count", model=m)
    assert st["queue"]["ns"] == round(_metric(text, "lstm_queue_wait_seconds_sum", model=m) * 1e9)
    for phase in ("compute_input", "compute_infer", "compute_output"):
        assert st[phase]["count"] == _metric(text, "lstm_inference_phase_requests_total", model=m, phase=phase)
        assert st[phase]["ns"] == round(_metric(text, "lstm_inference_phase_seconds_total", model=m, phase=phase) * 1e9)
    for b in after["batch_stats"]:
        size = str(b["batch_size"])
        assert b["compute_infer"]["count"] == _metric(text, "lstm_executions_total", model=m, batch_size=size)
        assert b["compute_infer"]["ns"] == round(
            _metric(text, "lstm_execution_seconds_total", model=m, batch_size=size, phase="compute_infer") * 1e9
        )
    assert after["execution_count"] == sum(
        _metric(text, "lstm_executions_total", model=m, batch_size=str(b["batch_size"])) for b in after["batch_stats"]
    )
    assert after["last_inference"] == round(_metric(text, "lstm_last_inference_timestamp_seconds", model=m) * 1000)
    # every model, and one model's every version, in the same schema
    everything = http.get("/v2/models/stats").json()["model_stats"]
    assert [(s["name"], s["version"]) for s in everything] == [("demand", "1")]
    assert http.get("/v2/models/demand.stateless/stats").json()["model_stats"][0]["name"] == "demand.stateless"
    assert http.get("/v2/models/nope/stats").status_code == 404


def _documented_commands() -> list[str]:
    text = (ROOT / "docs" / "clients.md").read_text()
    section = text.split("## perf_analyzer", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "docs/clients.md: the perf_analyzer section has no bash block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.startswith("scripts/")]


def test_the_guide_documents_both_modes():
    cmds = _documented_commands()
    assert cmds[0] == "scripts/tools/perf_analyzer.sh"
    assert any("-m demand " in c and "--sequence-length" in c for c in cmds)
    assert any("-m demand.stateless " in c for c in cmds)


@pytest.mark.parametrize("index", [1, 2], ids=["sequence", "stateless"])
def test_perf_analyzer_runs_unmodified_as_documented(tserver, http, index):
    cmds = _documented_commands()
    install = subprocess.run(["bash", cmds[0]], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    cmd = cmds[index].replace("localhost:8000", tserver.url.removeprefix("http://"))
    before = _stats(http)
    out = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    assert not re.search(r"error|failed|unable", report, re.I), report
    client_count = int(re.search(r"Client:\s+Request count: (\d+)", report).group(1))
    server = re.search(
        r"Server:\s+Inference count: (\d+)\s+Execution count: (\d+)\s+Successful request count: (\d+)", report
    )
    assert server, report
    assert client_count > 0 and int(server.group(3)) > 0
    assert re.search(r"queue \d+ usec \+ compute input \d+ usec \+ compute infer \d+ usec", report)
    after = _stats(http)
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"]
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] >= client_count


def test_instance_group_kind_follows_the_provider_in_use():
    card = read_card(ROOT / "models" / "demand" / "1")
    settings = Settings(inference_workers=3)
    gpu = model_config(card, settings, "CUDAExecutionProvider", 3600.0)["instance_group"]
    cpu = model_config(card, settings, "CPUExecutionProvider", 3600.0)["instance_group"]
    assert gpu == [{"name": "demand_0", "kind": "KIND_GPU", "count": 3, "gpus": [0]}]
    assert cpu[0]["kind"] == "KIND_CPU" and cpu[0]["gpus"] == []
