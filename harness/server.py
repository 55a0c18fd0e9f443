"""The service in a subprocess on a free loopback port, ready when its readiness route says so.

``LSTM_TEST_WORKERS=N`` (N > 1) in the environment of the tests runs every such server with
``LSTM_WORKERS=N``: a supervisor and N worker processes on one port. A server whose test
chose no session store gets a Redis of its own (a real ``redis-server`` on a free port,
stopped with the server), since several workers need one; a test that chose a store keeps it.
``make test-workers`` runs the end-to-end tests this way."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.paths import ROOT
from harness.procs import free_port, stop, wait_ready
from harness.redis import RedisServer


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
    env = dict(env or {})
    with ExitStack() as stack:
        workers = int(os.environ.get("LSTM_TEST_WORKERS", "1"))
        if workers > 1 and "LSTM_WORKERS" not in env:
            env["LSTM_WORKERS"] = str(workers)
            if "LSTM_SESSION_STORE" not in env:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lstm-test-redis-")))
                redis = RedisServer(free_port(), tmp)
                redis.start()
                stack.callback(redis.stop)
                env |= {"LSTM_SESSION_STORE": "redis", "LSTM_REDIS_URL": redis.url}
        yield stack.enter_context(_running(env, repo, timeout))


@contextmanager
def _running(env: dict[str, str], repo: Path | None, timeout: float) -> Iterator[Server]:
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
        **env,
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


def run_to_exit(
    repo: Path | None, env: dict[str, str] | None = None, port: int = 1, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m service`` for a start expected to end (a refused model, a taken port): its
    exit code and output. gRPC gets a free port unless ``env`` names one."""
    args = [sys.executable, "-m", "service", "--port", str(port)]
    if repo is not None:
        args += ["--model-repository", str(repo)]
    full_env = {**os.environ, "LSTM_GRPC_PORT": str(free_port()), **(env or {})}
    return subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
