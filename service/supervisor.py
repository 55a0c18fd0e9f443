"""Several server processes on one port: ``python -m service`` with ``LSTM_WORKERS`` > 1.

The supervisor serves nothing itself. It starts N workers, each a whole ``python -m service``
(event loop, batcher, onnxruntime session) that binds the same host and port with
``SO_REUSEPORT``, so the kernel spreads connections across them. Sessions live in Redis, where
every worker sees every session: ordering holds through the store's compare-and-set, retries
through the stored last reply, expiry, capacity and API-key ownership through the store's
records, exactly as between replicas. With the memory store each worker would hold different
sessions, so start-up refuses it.

Metrics: the workers write Prometheus values to files in a directory the supervisor owns
(``prometheus_client``'s multiprocess mode), and whichever worker answers ``/metrics`` sums
every worker's files (see :func:`service.metrics.exposition`).

Signals: SIGTERM/SIGINT are forwarded to every worker, each drains as a single server does
(not ready, 503 to new work, queued and running batches finish); the supervisor exits 0 when
all have exited 0. A second signal is forwarded too (workers then exit at once). A worker
killed by a signal, or exiting later, while not draining is replaced; one that fails at
start-up stops them all with its exit code. Workers die with the supervisor (``PR_SET_PDEATHSIG``), never orphaned.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

from service.config import Settings

log = logging.getLogger("service")

WORKER_ENV = "LSTM_WORKER_INDEX"  # set in each worker: the worker binds with SO_REUSEPORT
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# a worker that exits with an error code (2: bad settings or model; 1: port not bound) this
# soon after its start failed to start, and so would its replacement: stop all. A worker
# killed by a signal, or failing later, is replaced.
START_GRACE_S = 30.0


def worker_count(settings: Settings) -> int:
    return settings.workers or len(os.sched_getaffinity(0))


def check(settings: Settings) -> str | None:
    """Why these settings cannot run several workers, or None."""
    if worker_count(settings) > 1 and settings.session_store != "redis":
        return (
            f"LSTM_WORKERS={settings.workers} needs LSTM_SESSION_STORE=redis: with the memory store each worker "
            "process would hold different sessions. Use LSTM_WORKERS=1, or run Redis and set LSTM_SESSION_STORE=redis"
        )
    return None


HELD_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _prepare_worker() -> None:
    """In the worker, before exec: die with the supervisor, and start with SIGTERM/SIGINT held
    (the mask survives exec). A drain may come while a worker still starts, its socket
    already bound; held, the signal waits until uvicorn handles it (``DrainingServer.startup``
    unblocks) instead of killing the worker with connections in its queue."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the kernel signals the worker if we die
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)


class Supervisor:
    def __init__(self, argv: list[str], n: int) -> None:
        self.argv, self.n = argv, n
        self.metrics_dir = tempfile.mkdtemp(prefix="lstm-metrics-")
        self.procs: dict[int, subprocess.Popen] = {}
        self.started: dict[int, float] = {}
        self.signals = 0

    def _spawn(self, index: int) -> None:
        env = {**os.environ, WORKER_ENV: str(index), MULTIPROC_ENV: self.metrics_dir, "LSTM_WORKERS": "1"}
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "service", *self.argv], env=env, preexec_fn=_prepare_worker
        )
        self.started[index] = time.monotonic()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signals += 1
        log.info("signal %d: forwarding to %d worker(s)", sig, len(self.procs))
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            for i in range(self.n):
                self._spawn(i)
            log.info("supervising %d workers (pids %s)", self.n, [p.pid for p in self.procs.values()])
            return self._watch()
        finally:
            for p in self.procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _watch(self) -> int:
        codes: dict[int, int] = {}
        while len(codes) < len(self.procs):
            try:
                pid, status = os.wait()  # woken by a worker's exit; signals run their handler first
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            index = next((i for i, p in self.procs.items() if p.pid == pid), None)
            if index is None:
                continue
            p = self.procs[index]
            p.returncode = code = os.waitstatus_to_exitcode(status)
            if self.signals:
                codes[index] = code
                continue
            if time.monotonic() - self.started[index] < START_GRACE_S and code > 0:
                log.error("worker %d exited with %d at start-up: stopping", index, code)
                self._on_signal(signal.SIGTERM, None)
                codes[index] = code
                return self._finish(codes, code)
            log.warning("worker %d (pid %d) exited with %d: starting another", index, pid, code)
            _mark_dead(pid, self.metrics_dir)
            self._spawn(index)
        return self._finish(codes, 0)

    def _finish(self, codes: dict[int, int], first: int) -> int:
        for i, p in self.procs.items():
            if i not in codes:
                codes[i] = p.wait()
        bad = [c for c in codes.values() if c != 0]
        if first or bad:
            return first or bad[0]
        log.info("all %d workers drained and exited", len(codes))
        return 0


def _mark_dead(pid: int, path: str) -> None:
    """Drop a dead worker's live gauges (queue depth, readiness) from the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


def supervise(argv: list[str], settings: Settings) -> int:
    return Supervisor(argv, worker_count(settings)).run()
