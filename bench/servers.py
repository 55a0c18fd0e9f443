"""Start and watch the servers under test: the service, the naive baseline and the minimal reference."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.procs import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = ROOT / "models" / "demand" / "1"


@dataclass
class Proc:
    url: str
    proc: subprocess.Popen
    grpc: str = ""  # host:port of the service's gRPC port

    def pids(self) -> list[int]:
        """The server process and its live descendants (worker processes, Triton's stubs)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited while we looked
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU of the server so far, over all its processes."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def peak_rss_bytes(self) -> int:
        """Sum over the server's processes of each one's peak resident memory."""
        total = 0
        for pid in self.pids():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            total += next((int(ln.split()[1]) * 1024 for ln in lines if ln.startswith("VmHWM:")), 0)
        return total

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=10).text


@contextmanager
def serve(kind: str, model_dir: Path, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """``kind`` is ``service`` (the model's repository is its parent's parent), ``layer:NAME``
    (the service with a layer replaced, ``bench/layer_server.py``), ``naive`` or ``minimal``
    (``bench/minimal_server.py``)."""
    port = free_port()
    if kind == "service" or kind.startswith("layer:"):
        module = ["service"] if kind == "service" else ["bench.layer_server", kind.removeprefix("layer:")]
        args = [
            sys.executable,
            "-m",
            *module,
            "--port",
            str(port),
            "--model-repository",
            str(model_dir.parent.parent),
        ]
        health = "/v2/health/ready"
    else:
        module = {"naive": "bench.naive_server", "minimal": "bench.minimal_server"}[kind]
        args = [sys.executable, "-m", module, "--port", str(port), "--model-dir", str(model_dir)]
        health = "/health" if kind == "naive" else "/v2/health/ready"
    grpc_port = str(free_port())
    full_env = {**os.environ, "LSTM_LOG_LEVEL": "warning", "LSTM_GRPC_PORT": grpc_port, **(env or {})}
    proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p = Proc(f"http://127.0.0.1:{port}", proc, f"127.0.0.1:{full_env['LSTM_GRPC_PORT']}")
    try:
        wait_ready(proc, p.url + health, 60, lambda: proc.stderr.read().decode() if proc.stderr else "")
        yield p
    finally:
        stop(proc)
