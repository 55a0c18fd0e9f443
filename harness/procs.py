"""Processes the tests and benchmarks start: free ports, waiting for readiness, stopping."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

_handed_out: set[int] = set()  # ports this process gave out: the kernel may offer a closed one again at once
LOWEST = 10_000  # the lowest port handed out
BUS = 10_000  # a cluster node's bus port is its port + this
_rng = random.SystemRandom()  # not the tests' seeded generator: each run and worker draws its own


def _ephemeral_low() -> int:
    """The lowest port the kernel gives a client socket (32768 when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _share() -> tuple[int, int]:
    """This pytest-xdist worker's share of the ports (those equal to its index modulo the
    worker count), so two workers never pick the same port at once; (0, 1) outside xdist."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 0:
        return int(worker[2:]) % int(count), int(count)
    return 0, 1


def free_port(bus: bool = False) -> int:
    """A free loopback port below the kernel's ephemeral range, so that no client socket is
    given it between this check and the server's bind (a picked ephemeral port was once taken
    so, and the server failed with "address already in use"), in this test worker's own share
    (the kernel's choice where the range leaves no room below it); never one this process
    handed out before. With ``bus``, one whose port + 10000 (a cluster's bus port) is free too."""
    hi = _ephemeral_low() - (BUS if bus else 0)
    k, n = _share()
    below = hi - LOWEST >= 1000 * n
    for attempt in range(100_000):
        if below:
            port = _rng.randrange(LOWEST, hi - n)
            port += (k - port) % n  # into this worker's share
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        wanted = (port, port + BUS) if bus else (port,)
        if attempt < 1000 and any(p in _handed_out for p in wanted):
            continue  # (after 1000 offers of old ports, an old one will do rather than none)
        if wanted[-1] > 65535 or not all(_bindable(p) for p in wanted):
            continue
        _handed_out.update(wanted)
        return port
    raise RuntimeError("no free loopback port")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_ready(proc: subprocess.Popen, url: str, timeout: float, output: Callable[[], str]) -> None:
    """Poll ``url`` until it answers 200; fail with the process's output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[2:4]} exited with {proc.returncode}:\n{output()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout} s:\n{output()}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
