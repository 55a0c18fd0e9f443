"""Real redis-server processes on free loopback ports: one server, or a 3-node cluster."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.paths import ROOT
from harness.procs import free_port


def _cli(port: int, *args: str, check: bool = True) -> str:
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"redis-cli {args}: {out.stderr or out.stdout}")
    return out.stdout


@dataclass
class RedisServer:
    port: int
    workdir: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while _cli(self.port, "ping", check=False).strip() != "PONG":
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def flush(self) -> None:
        _cli(self.port, "flushall")


def require_redis() -> None:
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        raise RuntimeError("redis-server and redis-cli are needed (Debian packages redis-server, redis-tools)")


def manifest_args(appendfsync: str) -> list[str]:
    """The Redis flags of k8s/base/redis.yaml, with ``appendfsync`` set, minus its data directory."""
    docs = list(yaml.safe_load_all((ROOT / "k8s" / "base" / "redis.yaml").read_text()))
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"][1:]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    flags["--appendfsync"] = appendfsync
    flags.pop("--dir")
    return [x for kv in flags.items() for x in kv]


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    require_redis()
    with tempfile.TemporaryDirectory() as d:
        s = RedisServer(free_port(), Path(d))
        s.start()
        try:
            yield s
        finally:
            s.stop()


@contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[list[RedisServer]]:
    require_redis()
    with tempfile.TemporaryDirectory() as d:
        servers = []
        for i in range(nodes):
            wd = Path(d) / str(i)
            wd.mkdir()
            servers.append(
                RedisServer(
                    free_port(bus=True), wd, ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
                )
            )
        try:
            for s in servers:
                s.start()
            addrs = [f"127.0.0.1:{s.port}" for s in servers]
            _cli(servers[0].port, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes")
            deadline = time.monotonic() + 20
            while not all("cluster_state:ok" in _cli(s.port, "cluster", "info") for s in servers):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis cluster did not reach cluster_state:ok")
                time.sleep(0.1)
            yield servers
        finally:
            for s in servers:
                s.stop()
