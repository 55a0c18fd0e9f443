"""Podman through scripts/images.sh (every workaround of this kind of machine lives there)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from harness.paths import ROOT
from harness.procs import free_port

SCRIPT = ROOT / "scripts" / "images.sh"
IMAGE = os.environ.get("IMAGE", "lstm-serving:0.1.0")  # what `make image` built
REDIS_IMAGE = "localhost/lstm-redis:7"


def require_podman() -> None:
    """Fail, never skip: CI installs podman with scripts/tools/containers.sh."""
    assert shutil.which("podman"), "podman is needed (scripts/tools/containers.sh installs it)"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(SCRIPT), "podman", *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {out.returncode}:\n{out.stderr}{out.stdout}")
    return out


def inspect(name: str, kind: str = "container") -> dict:
    return json.loads(podman(kind, "inspect", name).stdout)[0]


def image_exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


# how the service is meant to run: read-only root, a tmpfs at /tmp, no capabilities, no privilege gain
HARDENED = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


@dataclass
class Container:
    name: str
    url: str

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def exec(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *cmd, check=False)


def wait_ready(c: Container, timeout: float = 90) -> None:
    """Poll readiness until 200; fail with the container's log if it stops or the time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        state = inspect(c.name)["State"]
        if not state["Running"]:
            raise RuntimeError(f"{c.name} stopped (exit {state['ExitCode']}):\n{c.logs()}")
        try:
            if httpx.get(c.url + "/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{c.name} not ready after {timeout} s:\n{c.logs()}")
        time.sleep(0.2)


@contextmanager
def service_container(image: str = IMAGE, *extra: str) -> Iterator[Container]:
    """The image run hardened, published on a free loopback port; removed afterwards."""
    name = f"lstm-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    podman("run", "-d", "--name", name, *HARDENED, "-p", f"127.0.0.1:{port}:8000", *extra, image)
    c = Container(name, f"http://127.0.0.1:{port}")
    try:
        wait_ready(c)
        yield c
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
