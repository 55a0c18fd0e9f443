"""Expiry and capacity (in-process, on an injected clock); overload and deadlines through a real server."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from harness.paths import DEFAULT_MODEL
from service.config import Settings
from service.metrics import Metrics
from service.sessions.memory import MemoryStore
from tests.service.conftest import in_process, random_steps, running_server

pytestmark = pytest.mark.integration


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_expired_session_is_an_explicit_404_and_capacity_refuses_with_429():
    clock = FakeClock()
    metrics = Metrics()
    settings = Settings(model_repository=DEFAULT_MODEL.parent.parent, session_ttl_s=60, max_sessions=3)
    store = MemoryStore(60, sweep_interval_s=3600, on_expire=metrics.sessions_expired.inc, clock=clock)
    async with in_process(settings, store, metrics) as client:
        ids = []
        for _ in range(3):
            r = await client.post("/v1/sessions", json={"model": "demand"})
            assert r.status_code == 201
            ids.append(r.json()["session_id"])
        r = await client.post("/v1/sessions", json={"model": "demand"})
        assert r.status_code == 429 and r.headers["retry-after"] and "maximum of 3" in r.json()["error"]
        # the live sessions were not evicted to make room
        for sid in ids:
            assert (await client.get(f"/v1/sessions/{sid}")).status_code == 200
        clock.now += 61
        r = await client.post(f"/v1/sessions/{ids[0]}/step", json={"inputs": [[30000.0, 1.0, 1.0]]})
        assert r.status_code == 404
        assert "expired" in r.json()["error"] and "after 1 minute without a step" in r.json()["error"]
        r = await client.post("/v1/sessions", json={"model": "demand"})
        assert r.status_code == 201, "expired sessions free their capacity"
        metrics_text = (await client.get("/metrics")).text
        assert "lstm_sessions_expired_total 3.0" in metrics_text, [
            ln for ln in metrics_text.splitlines() if "expired" in ln
        ]


async def test_overload_sheds_with_retry_after_and_recovers():
    env = {"LSTM_MAX_QUEUE_SIZE": "2", "LSTM_MAX_BATCH_SIZE": "4"}
    rng = np.random.default_rng(0)
    x = np.stack([random_steps(rng, 2000) for _ in range(4)]).tolist()
    with running_server(env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            replies = await asyncio.gather(
                *(client.post("/v1/models/demand/predict", json={"inputs": x}) for _ in range(24))
            )
            codes = [r.status_code for r in replies]
            assert set(codes) <= {200, 503}, codes
            assert codes.count(503) > 0 and codes.count(200) > 0, codes
            shed = [r for r in replies if r.status_code == 503]
            assert all(r.headers.get("retry-after") and "queue is full" in r.json()["error"] for r in shed)
            r = await client.post("/v1/models/demand/predict", json={"inputs": [[[30000.0, 1.0, 1.0]]]})
            assert r.status_code == 200, "the server serves again once load drops"


async def test_deadline_gives_504_and_leaves_the_session_untouched(offline):
    env = {"LSTM_REQUEST_TIMEOUT_S": "0.2", "LSTM_MAX_BATCH_SIZE": "256", "LSTM_MAX_BODY_BYTES": "100000000"}
    rng = np.random.default_rng(1)
    heavy = np.stack([random_steps(rng, 1000) for _ in range(256)]).tolist()  # ~1 s of compute: 5x the deadline
    x = random_steps(rng, 200)
    with running_server(env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            sid = (await client.post("/v1/sessions", json={"model": "demand"})).json()["session_id"]
            outputs: list = []
            # occupy the runtime with work much longer than the deadline, and step behind it
            busy = asyncio.ensure_future(client.post("/v1/models/demand/predict", json={"inputs": heavy}))
            t = 0
            while t < len(x) - 1:
                r = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[t : t + 1].tolist()})
                if r.status_code != 200:
                    break
                outputs += r.json()["outputs"]
                t += 1
            assert r.status_code == 504, r.text
            assert "deadline" in r.json()["error"]
            assert (await busy).status_code in (200, 504)  # it may pass its own deadline too
            info = (await client.get(f"/v1/sessions/{sid}")).json()
            assert info["step"] == t, "a timed-out step must not advance the session"
            for _ in range(100):  # the heavy batch may still hold the runtime: 504 is safe to retry
                r = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": x[t:].tolist(), "expected_step": t})
                if r.status_code != 504:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 200, r.text
            want, _ = offline.run(x)
            offline.assert_outputs_close(outputs + r.json()["outputs"], want)
