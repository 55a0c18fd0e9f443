"""docker-compose.yml brought up with podman-compose (`make compose-test`): two service
containers and Redis on a podman network (the replicas reach Redis by its service name);
8 streams alternate between the replicas, one replica is killed, and every stream continues
exactly on the other. Prometheus and Grafana are not started: their images cannot be pulled
where this runs (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.paths import ROOT
from harness.procs import free_port
from harness.reference import random_steps
from tests.containers.podman import (
    IMAGE,
    REDIS_IMAGE,
    SCRIPT,
    Container,
    image_exists,
    podman,
    require_podman,
    wait_ready,
)

pytestmark = pytest.mark.containers

STREAMS = 8
STEPS = 60


@dataclass
class Stack:
    project: str
    a: Container
    b: Container
    redis: str


def compose(project: str, override: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(override)]
    out = subprocess.run(
        [str(SCRIPT), "compose", "-p", project, *files, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
        cwd=ROOT,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"podman-compose {' '.join(args)} exited {out.returncode}:\n{out.stderr}{out.stdout}")
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    require_podman()
    for image in (IMAGE, REDIS_IMAGE):
        assert image_exists(image), f"{image} is not built: run `make compose-test` (it builds both)"
    # the images built here stand in for `build:` and the public redis image
    override = tmp_path_factory.mktemp("compose") / "local-images.yml"
    override.write_text(
        f"services:\n  lstm-a:\n    image: {IMAGE}\n  lstm-b:\n    image: {IMAGE}\n  redis:\n    image: {REDIS_IMAGE}\n"
    )
    project = f"lstmtest{uuid.uuid4().hex[:6]}"
    ports = {k: str(free_port()) for k in ("LSTM_A_PORT", "LSTM_B_PORT", "LSTM_A_GRPC_PORT", "LSTM_B_GRPC_PORT")}
    try:
        compose(project, override, ports, "up", "-d", "--no-build", "redis", "lstm-a", "lstm-b")
        a = Container(f"{project}_lstm-a_1", f"http://127.0.0.1:{ports['LSTM_A_PORT']}")
        b = Container(f"{project}_lstm-b_1", f"http://127.0.0.1:{ports['LSTM_B_PORT']}")
        for c in (a, b):
            wait_ready(c)
        yield Stack(project, a, b, f"{project}_redis_1")
    finally:
        compose(project, override, ports, "down", "-v", "-t", "5")


def test_every_container_passes_its_compose_healthcheck(stack):
    # podman runs a healthcheck on demand where no systemd timer can run it periodically
    for name in (stack.a.name, stack.b.name, stack.redis):
        out = podman("healthcheck", "run", name, check=False)
        assert out.returncode == 0, f"{name}: {out.stdout}{out.stderr}"


async def alternate(
    c: httpx.AsyncClient, urls: list[str], sid: str, x: np.ndarray, k: int, dead: set[str], third: asyncio.Event
) -> list:
    """Send each chunk to the next replica in turn, skipping dead ones; a request whose
    replica dies or refuses (503) is resent, with the same ``expected_step``, to the other.
    ``third`` is set once a third of ``x`` has been acknowledged."""
    outs: list = []
    t, turn = 0, k
    while t < len(x):
        n = min(1 + (t + k) % 5, len(x) - t)
        url = urls[turn % 2]
        turn += 1
        if url in dead:
            continue
        try:
            r = await c.post(
                f"{url}/v1/sessions/{sid}/step", json={"inputs": x[t : t + n].tolist(), "expected_step": t}
            )
        except httpx.TransportError:
            dead.add(url)
            continue
        if r.status_code == 503:
            continue
        assert r.status_code == 200, r.text
        outs += r.json()["outputs"]
        t += n
        if t >= len(x) // 3:
            third.set()
    return outs


async def test_streams_alternate_between_replicas_and_survive_a_killed_one(stack, offline):
    rng = np.random.default_rng(31)
    seqs = [random_steps(rng, STEPS) for _ in range(STREAMS)]
    urls = [stack.a.url, stack.b.url]
    dead: set[str] = set()
    async with httpx.AsyncClient(timeout=30) as c:
        ids = [
            (await c.post(f"{urls[k % 2]}/v1/sessions", json={"model": "demand"})).json()["session_id"]
            for k in range(STREAMS)
        ]
        third = asyncio.Event()
        tasks = [asyncio.ensure_future(alternate(c, urls, ids[k], seqs[k], k, dead, third)) for k in range(STREAMS)]
        await asyncio.wait_for(third.wait(), 60)  # kill replica a while the streams run
        await asyncio.to_thread(podman, "kill", "--signal", "KILL", stack.a.name)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
        for k, outs in enumerate(results):
            want, _ = offline.run(seqs[k])
            offline.assert_outputs_close(outs, want)
        final = await asyncio.gather(*(c.get(f"{stack.b.url}/v1/sessions/{sid}") for sid in ids))
        assert [f.json()["step"] for f in final] == [STEPS] * STREAMS, "no step lost or applied twice"
    assert stack.a.url in dead, "replica a was killed while the streams ran"
