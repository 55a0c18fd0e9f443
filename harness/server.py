"""The service in a subprocess on a free loopback port, ready when its readiness route says so."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.paths import ROOT
from harness.procs import free_port, stop, wait_ready


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: Path
    grpc: str = ""  # host:port of the gRPC service

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_server(
    env: dict[str, str] | None = None, repo: Path | None = None, timeout: float = 60
) -> Iterator[Server]:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="lstm-server-", suffix=".log")[1])
    args = [sys.executable, "-m", "service", "--port", str(port)]
    if repo is not None:
        args += ["--model-repository", str(repo)]
    # every server gets its own gRPC port (the default, 8001, would collide)
    full_env = {
        **os.environ,
        "LSTM_MODEL_REPOSITORY": str(ROOT / "models"),
        "LSTM_GRPC_PORT": str(free_port()),
        **(env or {}),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc, log, f"127.0.0.1:{full_env['LSTM_GRPC_PORT']}")
    try:
        wait_ready(proc, server.url + "/v2/health/ready", timeout, server.log)
        yield server
    finally:
        stop(proc)
        log.unlink(missing_ok=True)
