"""Processes the tests and benchmarks start: free ports, waiting for readiness, stopping."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

import httpx


def free_port(bus: bool = False) -> int:
    """A free loopback port; with ``bus``, one whose port + 10000 (a cluster's bus port) is free too."""
    while True:
        with socket.socket() as s, socket.socket() as b:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if not bus:
                return port
            if port + 10000 > 65535:
                continue
            try:
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


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
