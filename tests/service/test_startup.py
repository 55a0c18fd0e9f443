"""A missing or broken model, or nonsense settings, stop start-up with a clear message."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from pydantic import ValidationError

from harness.server import run_to_exit
from service.config import Settings
from tests.conftest import DEFAULT_MODEL


def start(tmp_repo, env=None) -> subprocess.CompletedProcess:
    return run_to_exit(tmp_repo, env)


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(DEFAULT_MODEL, tmp_path / "demand" / "1")
    return tmp_path


def _edit_card(repo, **changes):
    p = repo / "demand" / "1" / "model.json"
    card = json.loads(p.read_text())
    card.update(changes)
    p.write_text(json.dumps(card))


@pytest.mark.parametrize(
    "breakage,message",
    [
        (lambda r: shutil.rmtree(r / "demand"), "holds no model"),
        (lambda r: (r / "demand" / "1" / "model.onnx").write_bytes(b"junk"), "sha256"),
        (lambda r: (r / "demand" / "1" / "model.json").write_text("{"), "not readable JSON"),
        (lambda r: _edit_card(r, hidden_size=32), "input h0 has shape"),
        (lambda r: _edit_card(r, n_features=4), "input x has shape"),
        (lambda r: _edit_card(r, num_layers=0), "positive integer"),
        (lambda r: (r / "demand" / "v1").mkdir(), "versions are positive integers"),
    ],
)
def test_broken_model_is_a_message_at_startup(repo, breakage, message):
    breakage(repo)
    out = start(repo)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_missing_repository(tmp_path):
    out = start(tmp_path / "nowhere")
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_cuda_without_cpu_fallback_is_refused_when_unavailable(repo):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    out = start(repo, {"LSTM_PROVIDERS": "cuda"})
    assert out.returncode == 2 and "install onnxruntime-gpu" in out.stderr


@pytest.mark.parametrize(
    "env,field",
    [
        ({"LSTM_PROVIDERS": "tpu"}, "unknown provider"),
        ({"LSTM_MAX_QUEUE_DELAY_MS": "-1"}, "max_queue_delay_ms"),
        ({"LSTM_MAX_BATCH_SIZE": "0"}, "max_batch_size"),
        ({"LSTM_SESSION_STORE": "disk"}, "session_store"),
    ],
)
def test_nonsense_settings_are_refused(monkeypatch, env, field):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_providers_parse_from_a_comma_list(monkeypatch):
    monkeypatch.setenv("LSTM_PROVIDERS", "CUDA, cpu")
    assert Settings().providers == ("cuda", "cpu")


@pytest.mark.parametrize("which", ["http", "grpc"])
def test_a_taken_port_names_the_setting_that_moves_it_and_nothing_says_ready(which):
    import socket

    from harness.procs import free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        http, grpc = (port, free_port()) if which == "http" else (free_port(), port)
        done = run_to_exit(DEFAULT_MODEL.parent.parent, {"LSTM_GRPC_PORT": str(grpc)}, port=http)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert " ready" not in out, out[-2000:]
    want = "set --port" if which == "http" else "set LSTM_GRPC_PORT or --grpc-port"
    assert want in out and f":{port}" in out, out[-2000:]
