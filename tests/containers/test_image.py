"""The CPU image, built by `make image`, run the way it is deployed (`make image-test`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from harness.reference import random_steps
from tests.containers.podman import IMAGE, Container, image_exists, inspect, podman, require_podman, service_container

pytestmark = pytest.mark.containers

HEALTHCHECK = [
    "CMD",
    "python",
    "-c",
    "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live', "
    "timeout=2).status == 200 else 1)",
]
SIZE_BUDGET = 300 * 10**6


@pytest.fixture(scope="module")
def image() -> str:
    require_podman()
    assert image_exists(IMAGE), f"{IMAGE} is not built: run `make image` first"
    return IMAGE


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[Container]:
    with service_container(image) as c:
        yield c


def test_image_is_small_and_holds_no_build_leftovers(image):
    size = inspect(image, "image")["Size"]
    assert size < SIZE_BUDGET, f"{image} is {size / 1e6:.0f} MB, over the {SIZE_BUDGET / 1e6:.0f} MB budget"
    script = (
        "ls /app; ls -d /root/.cache /opt/venv/bin/pip /src 2>/dev/null; "
        "find /opt/venv -name tests -type d | head -3; "
        'python -c \'import importlib.util as u; print("torch" if u.find_spec("torch") else "")\''
    )
    out = podman("run", "--rm", "--entrypoint", "sh", image, "-c", script)
    assert out.stdout.split() == ["models", "service"], out.stdout


def test_runs_read_only_non_root_without_capabilities(container):
    assert container.exec("id", "-u").stdout.strip() == "10001"
    status = container.exec("cat", "/proc/1/status").stdout
    caps = {k: v.strip() for k, v in (line.split(":", 1) for line in status.splitlines() if line.startswith("Cap"))}
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "0000000000000000", caps
    assert "NoNewPrivs:\t1" in status
    for path in ("/app/x", "/opt/venv/x", "/x"):
        assert container.exec("touch", path).returncode != 0, f"{path} is writable"
    assert container.exec("touch", "/tmp/x").returncode == 0, "/tmp (tmpfs) is writable"
    cfg = inspect(container.name)["HostConfig"]
    assert cfg["ReadonlyRootfs"] is True


def test_health_routes(container):
    for route in ("/v2/health/live", "/v2/health/ready", "/v2"):
        assert httpx.get(container.url + route, timeout=10).status_code == 200, route
    metrics = httpx.get(container.url + "/metrics", timeout=10).text
    assert 'lstm_model_info{model="demand",provider="CPUExecutionProvider",version="1"} 1.0' in metrics


def test_healthcheck_is_in_the_image_and_passes(image, container):
    hc = inspect(image, "image")["Healthcheck"]  # kept by --format docker (OCI drops it)
    assert hc["Test"] == HEALTHCHECK
    assert podman("healthcheck", "run", container.name, check=False).returncode == 0
    # the same command fails when nothing answers (the check can tell a dead service)
    dead = container.exec(*HEALTHCHECK[1:3], HEALTHCHECK[3].replace("8000", "8009"))
    assert dead.returncode != 0


def test_a_v1_session_streamed_in_chunks_equals_the_offline_run(container, offline):
    x = random_steps(np.random.default_rng(11), 50)
    with httpx.Client(base_url=container.url, timeout=30) as c:
        sid = c.post("/v1/sessions", json={"model": "demand"}).json()["session_id"]
        outs, t, k = [], 0, 0
        while t < len(x):
            n = min(1 + k % 6, len(x) - t)
            r = c.post(f"/v1/sessions/{sid}/step", json={"inputs": x[t : t + n].tolist(), "expected_step": t})
            assert r.status_code == 200, r.text
            outs += r.json()["outputs"]
            t, k = t + n, k + 1
    want, _ = offline.run(x)
    offline.assert_outputs_close(outs, want)


def test_a_v2_sequence_equals_the_offline_run(container, offline):
    x = random_steps(np.random.default_rng(12), 30)
    outs = []
    with httpx.Client(base_url=container.url, timeout=30) as c:
        for t in range(0, 30, 5):
            part = x[t : t + 5]
            body = {
                "inputs": [
                    {"name": "x", "shape": [1, len(part), 3], "datatype": "FP32", "data": part.ravel().tolist()}
                ],
                "parameters": {"sequence_id": "image-test", "sequence_start": t == 0, "sequence_end": t == 25},
            }
            r = c.post("/v2/models/demand/infer", json=body)
            assert r.status_code == 200, r.text
            (y,) = [o for o in r.json()["outputs"] if o["name"] == "y"]
            outs.append(np.asarray(y["data"], np.float32).reshape(len(part), -1))
    want, _ = offline.run(x)
    offline.assert_outputs_close(np.concatenate(outs), want)


async def test_sigterm_mid_stream_drains_and_exits_0_within_the_grace_period(image, offline):
    grace = 30  # compose's stop_grace_period; the drain timeout is 20 s
    rng = np.random.default_rng(13)
    seqs = [random_steps(rng, 400) for _ in range(4)]
    with service_container(image) as c:
        async with httpx.AsyncClient(base_url=c.url, timeout=30) as client:
            ids = [(await client.post("/v1/sessions", json={"model": "demand"})).json()["session_id"] for _ in seqs]
            sent = asyncio.Event()

            async def stream(k: int) -> tuple[int, list]:
                """Steps until the service refuses (503) or goes away; the steps it acknowledged."""
                outs: list = []
                for t in range(len(seqs[k])):
                    try:
                        r = await client.post(
                            f"/v1/sessions/{ids[k]}/step",
                            json={"inputs": seqs[k][t : t + 1].tolist(), "expected_step": t},
                        )
                    except httpx.TransportError:
                        break
                    if r.status_code == 503:
                        break
                    assert r.status_code == 200, r.text
                    outs += r.json()["outputs"]
                    if t == 20:
                        sent.set()
                return k, outs

            tasks = [asyncio.ensure_future(stream(k)) for k in range(4)]
            await asyncio.wait_for(sent.wait(), 60)
            t0 = time.monotonic()
            await asyncio.to_thread(podman, "kill", "--signal", "TERM", c.name)
            code = int((await asyncio.to_thread(podman, "wait", c.name, timeout=grace + 10)).stdout.strip())
            took = time.monotonic() - t0
            results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert code == 0, c.logs()
        assert took < grace, f"took {took:.1f} s to stop"
        assert "draining" in c.logs()
        assert max(len(outs) for _, outs in results) > 20, "the streams were running"
        for k, outs in results:
            assert 0 < len(outs) < 400, "the stop came mid-stream"
            want, _ = offline.run(seqs[k][: len(outs)])
            offline.assert_outputs_close(outs, want)


def test_memory_store_sessions_survive_a_container_replaced_on_the_same_volume(image, offline):
    """LSTM_STATE_DIR on a named volume: `podman stop` (SIGTERM) saves, a new container loads."""
    volume = f"lstm-state-{uuid.uuid4().hex[:8]}"
    env = ["-v", f"{volume}:/var/lib/lstm", "-e", "LSTM_STATE_DIR=/var/lib/lstm"]
    x = random_steps(np.random.default_rng(14), 20)
    try:
        with service_container(image, *env) as c, httpx.Client(base_url=c.url, timeout=30) as client:
            sid = client.post("/v1/sessions", json={"model": "demand"}).json()["session_id"]
            first = client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[:12].tolist(), "expected_step": 0})
            assert first.status_code == 200, first.text
            podman("stop", "-t", "30", c.name)
            assert "saved 1 session(s)" in c.logs()
        with service_container(image, *env) as c, httpx.Client(base_url=c.url, timeout=30) as client:
            assert "restored 1 session(s)" in c.logs()
            rest = client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[12:].tolist(), "expected_step": 12})
            assert rest.status_code == 200, rest.text
        want, _ = offline.run(x)
        offline.assert_outputs_close(first.json()["outputs"] + rest.json()["outputs"], want)
    finally:
        podman("volume", "rm", "-f", volume, check=False)
