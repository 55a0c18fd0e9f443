"""``LSTM_WORKERS`` > 1: a supervisor and worker processes on one port over Redis.

What is specific to the mode: the memory store is refused at start; steps spread over the
workers still give the offline outputs, in order; ``/metrics`` counts every worker's work,
whichever worker answers; a worker killed mid-stream is replaced and loses nothing; SIGTERM
drains every worker and the supervisor exits 0. The rest of the end-to-end suite runs in
this mode too under ``make test-workers`` (``LSTM_TEST_WORKERS=2``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.paths import ROOT
from harness.redis import RedisServer
from tests.service.conftest import random_steps, running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    from harness.procs import free_port

    r = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    r.start()
    yield r.url
    r.stop()


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return sorted(out)


def listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``port`` (its own, SO_REUSEPORT)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A" and f[9] in inodes:
                return True
    return False


def all_workers_listening(s, n: int = 2, timeout: float = 60) -> list[int]:
    """The supervisor's ``n`` workers once each listens on the port (readiness answers from
    whichever worker is up first; a worker still loading does not listen yet)."""
    port = int(s.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while True:
        workers = children(s.proc.pid)
        if len(workers) == n and all(listening(pid, port) for pid in workers):
            return workers
        assert time.monotonic() < deadline, f"workers {workers} not all listening on {port}"
        time.sleep(0.05)


def test_several_workers_with_the_memory_store_are_refused_at_start():
    env = {**os.environ, "LSTM_WORKERS": "2", "LSTM_SESSION_STORE": "memory"}
    p = subprocess.run(
        [sys.executable, "-m", "service", "--port", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2
    assert "LSTM_WORKERS=2 needs LSTM_SESSION_STORE=redis" in p.stderr


def step(c: httpx.Client, sid: str, x: np.ndarray, expected: int) -> list[list[float]]:
    """One step on a new connection (the kernel spreads connections, not requests, over the
    workers); retried with the same ``expected_step`` when the connection breaks, as the
    client library does: a connection queued on a worker that was killed is reset."""
    for attempt in range(3):
        try:
            r = c.post(
                f"/v1/sessions/{sid}/step",
                json={"inputs": x.tolist(), "expected_step": expected},
                headers={"connection": "close"},
            )
            break
        except httpx.TransportError:
            if attempt == 2:
                raise
    assert r.status_code == 200, r.text
    return r.json()["outputs"]


def test_steps_over_two_workers_equal_offline_and_metrics_count_all_of_them(redis_url, offline):
    env = {"LSTM_SESSION_STORE": "redis", "LSTM_REDIS_URL": redis_url, "LSTM_WORKERS": "2"}
    x = random_steps(np.random.default_rng(3), 60)
    with running_server(env) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        all_workers_listening(s)
        sid = c.post("/v1/sessions", json={"model": "demand"}).json()["session_id"]
        got = [y for t in range(0, 60, 3) for y in step(c, sid, x[t : t + 3], t)]
        offline.assert_outputs_close(got, offline.run(x)[0])
        text = c.get("/metrics").text
        steps = sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("lstm_steps_total{"))
        assert steps == 60
        stats = c.get("/v2/models/demand/stats").json()["model_stats"][0]
        assert stats["inference_stats"]["success"]["count"] == 20


def test_a_killed_worker_is_replaced_and_sigterm_then_drains_every_worker(redis_url, offline):
    env = {"LSTM_SESSION_STORE": "redis", "LSTM_REDIS_URL": redis_url, "LSTM_WORKERS": "2"}
    x = random_steps(np.random.default_rng(4), 40)
    with running_server(env) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        sid = c.post("/v1/sessions", json={"model": "demand"}).json()["session_id"]
        got = [y for t in range(20) for y in step(c, sid, x[t : t + 1], t)]
        killed = all_workers_listening(s)[0]
        os.kill(killed, signal.SIGKILL)
        got += [y for t in range(20, 40) for y in step(c, sid, x[t : t + 1], t)]
        offline.assert_outputs_close(got, offline.run(x)[0])
        assert s.proc.poll() is None
        assert "exited with -9: starting another" in s.log()
        workers = all_workers_listening(s)
        assert killed not in workers

        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(60) == 0
        log = s.log()
    assert log.count("draining (up to") == 2
    assert "all 2 workers drained and exited" in log
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
