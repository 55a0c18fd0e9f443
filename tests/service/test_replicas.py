"""Two service processes sharing one real Redis: failover, races, and Redis outages."""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.procs import free_port
from harness.redis import RedisServer, redis_server
from tests.service.conftest import random_steps, running_server

pytestmark = pytest.mark.integration


def redis_env(url: str, **extra: str) -> dict[str, str]:
    return {"LSTM_SESSION_STORE": "redis", "LSTM_REDIS_URL": url, **extra}


@pytest.fixture(scope="module")
def shared_redis():
    with redis_server() as r:
        yield r


@pytest.fixture(scope="module")
def replicas(shared_redis):
    with running_server(redis_env(shared_redis.url)) as a, running_server(redis_env(shared_redis.url)) as b:
        yield a, b


async def step(client: httpx.AsyncClient, url: str, sid: str, x: np.ndarray, expected: int | None) -> httpx.Response:
    body: dict = {"inputs": x.tolist()}
    if expected is not None:
        body["expected_step"] = expected
    return await client.post(f"{url}/v1/sessions/{sid}/step", json=body)


async def stream_with_failover(
    c: httpx.AsyncClient, primary: str, backup: str, sid: str, x: np.ndarray, chunk: int, progress: list, k: int
) -> tuple[list, bool]:
    """Stream ``x`` to ``primary``; when it dies or refuses while draining, resend the same request
    (same ``expected_step``) to ``backup``: applied already -> the stored reply, not applied -> it runs.
    Returns the outputs and whether the stream moved."""
    outs, t, url = [], 0, primary
    while t < len(x):
        n = min(1 + t % chunk, len(x) - t)
        try:
            r = await step(c, url, sid, x[t : t + n], t)
        except httpx.TransportError:
            r = None
        if url == primary and (r is None or r.status_code == 503):
            url = backup
            continue
        assert r is not None and r.status_code == 200, r and r.text
        outs += r.json()["outputs"]
        t += n
        progress[k] = t
    return outs, url == backup


async def test_a_stream_alternating_between_replicas_equals_offline(replicas, offline):
    a, b = replicas
    x = random_steps(np.random.default_rng(0), 60)
    async with httpx.AsyncClient(timeout=30) as c:
        sid = (await c.post(f"{a.url}/v1/sessions", json={"model": "demand"})).json()["session_id"]
        outs, t, k = [], 0, 0
        while t < len(x):
            n = 1 + k % 7
            r = await step(c, (a, b)[k % 2].url, sid, x[t : t + n], t)
            assert r.status_code == 200, r.text
            outs += r.json()["outputs"]
            t, k = t + n, k + 1
        want, state = offline.run(x)
        offline.assert_outputs_close(outs, want)
        snap = (await c.get(f"{b.url}/v1/sessions/{sid}/snapshot")).json()
        assert snap["step"] == 60 and np.max(np.abs(np.asarray(snap["h"]) - state[0])) <= 1e-5


async def test_concurrent_steps_on_both_replicas_one_wins_each_step(replicas, offline):
    a, b = replicas
    rng = np.random.default_rng(1)
    xa, xb = random_steps(rng, 20, start=0), random_steps(rng, 20, start=0)
    async with httpx.AsyncClient(timeout=30) as c:
        sid = (await c.post(f"{a.url}/v1/sessions", json={"model": "demand"})).json()["session_id"]
        applied, outs = [], []
        for t in range(20):
            ra, rb = await asyncio.gather(step(c, a.url, sid, xa[t : t + 1], t), step(c, b.url, sid, xb[t : t + 1], t))
            codes = sorted([ra.status_code, rb.status_code])
            assert codes == [200, 409], (ra.text, rb.text)
            winner = ra if ra.status_code == 200 else rb
            applied.append((xa if winner is ra else xb)[t])
            outs += winner.json()["outputs"]
            assert winner.json()["step"] == t + 1
        want, state = offline.run(np.asarray(applied))
        offline.assert_outputs_close(outs, want)
        snap = (await c.get(f"{a.url}/v1/sessions/{sid}/snapshot")).json()
        assert snap["step"] == 20
        assert np.max(np.abs(np.asarray(snap["c"]) - state[1])) <= 1e-5
        # without expected_step both requests apply, one after the other (compare-and-set retries)
        ra, rb = await asyncio.gather(step(c, a.url, sid, xa[:1], None), step(c, b.url, sid, xb[:1], None))
        assert ra.status_code == rb.status_code == 200 and {ra.json()["step"], rb.json()["step"]} == {21, 22}


async def test_sigkill_of_a_replica_mid_stream_loses_nothing(shared_redis, offline):
    rng = np.random.default_rng(2)
    seqs = [random_steps(rng, 80) for _ in range(8)]
    with running_server(redis_env(shared_redis.url)) as survivor, running_server(redis_env(shared_redis.url)) as victim:
        async with httpx.AsyncClient(timeout=30) as c:
            ids = [
                (await c.post(f"{victim.url}/v1/sessions", json={"model": "demand"})).json()["session_id"] for _ in seqs
            ]
            progress = [0] * 8
            tasks = [
                asyncio.ensure_future(
                    stream_with_failover(c, victim.url, survivor.url, ids[k], seqs[k], 5, progress, k)
                )
                for k in range(8)
            ]
            while sum(progress) < 8 * 30:
                await asyncio.sleep(0.01)
            victim.proc.send_signal(signal.SIGKILL)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
            for k, (outs, _) in enumerate(results):
                want, _ = offline.run(seqs[k])
                offline.assert_outputs_close(outs, want)
                info = (await c.get(f"{survivor.url}/v1/sessions/{ids[k]}")).json()
                assert info["step"] == 80, "no step lost or applied twice"


async def test_redis_outage_gives_503_then_recovers_without_corruption(offline):
    x = random_steps(np.random.default_rng(3), 12)
    with tempfile.TemporaryDirectory() as d:
        redis = RedisServer(free_port(), Path(d), ["--appendonly", "yes", "--appendfsync", "always"])
        redis.start()
        try:
            with running_server(redis_env(redis.url, LSTM_REDIS_TIMEOUT_S="0.5")) as s:
                async with httpx.AsyncClient(base_url=s.url, timeout=30) as c:
                    sid = (await c.post("/v1/sessions", json={"model": "demand"})).json()["session_id"]
                    first = await step(c, "", sid, x[:5], 0)
                    assert first.status_code == 200
                    redis.stop()
                    down = await step(c, "", sid, x[5:8], 5)
                    assert down.status_code == 503 and "unavailable" in down.json()["error"]
                    assert down.headers.get("retry-after")
                    assert (await c.post("/v1/sessions", json={"model": "demand"})).status_code == 503
                    assert (await c.get("/v2/health/ready")).status_code == 503
                    redis.start()
                    for _ in range(50):
                        if (await c.get("/v2/health/ready")).status_code == 200:
                            break
                        await asyncio.sleep(0.1)
                    rest = await step(c, "", sid, x[5:], 5)
                    assert rest.status_code == 200, rest.text
                    want, _ = offline.run(x)
                    offline.assert_outputs_close(first.json()["outputs"] + rest.json()["outputs"], want)
        finally:
            redis.stop()


async def test_sigterm_drain_loses_nothing_while_clients_move_to_the_other_replica(shared_redis, offline):
    rng = np.random.default_rng(5)
    seqs = [random_steps(rng, 60) for _ in range(8)]
    with running_server(redis_env(shared_redis.url)) as stays, running_server(redis_env(shared_redis.url)) as drains:
        async with httpx.AsyncClient(timeout=30) as c:
            ids = [
                (await c.post(f"{drains.url}/v1/sessions", json={"model": "demand"})).json()["session_id"] for _ in seqs
            ]
            progress = [0] * 8
            tasks = [
                asyncio.ensure_future(stream_with_failover(c, drains.url, stays.url, ids[k], seqs[k], 4, progress, k))
                for k in range(8)
            ]
            while sum(progress) < 8 * 20:
                await asyncio.sleep(0.01)
            drains.proc.send_signal(signal.SIGTERM)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert await asyncio.to_thread(drains.proc.wait, 30) == 0
            for k, (outs, _) in enumerate(results):
                want, _ = offline.run(seqs[k])
                offline.assert_outputs_close(outs, want)
                assert (await c.get(f"{stays.url}/v1/sessions/{ids[k]}")).json()["step"] == 60
            assert any(moved for _, moved in results), "the streams moved to the remaining replica"
