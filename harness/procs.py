"""Processes the tests and benchmarks start: free ports, waiting for readiness, stopping."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

import httpx

_handed_out: set[int] = set()  # ports this process gave out: the kernel may offer a closed one again at once


def free_port(bus: bool = False) -> int:
    """A free loopback port, never one this process handed out before (a server asked for an
    HTTP and a gRPC port got the same one twice: the kernel may offer a just-closed port
    again); with ``bus``, one whose port + 10000 (a cluster's bus port) is free too."""
    for attempt in range(100_000):
        with socket.socket() as s, socket.socket() as b:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if attempt < 1000 and (port in _handed_out or (bus and port + 10000 in _handed_out)):
                continue  # (after 1000 offers of old ports, an old one will do rather than none)
            if not bus:
                _handed_out.add(port)
                return port
            if port + 10000 > 65535:
                continue
            try:
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            _handed_out.update((port, port + 10000))
            return port
    raise RuntimeError("no free loopback port pair for a cluster bus")


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
