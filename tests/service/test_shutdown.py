"""SIGTERM under load: not ready, new work refused with 503, in-flight work finishes, exit 0."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import numpy as np
import pytest

from tests.service.conftest import random_steps, running_server

pytestmark = pytest.mark.integration


async def test_sigterm_drains_and_exits_zero():
    rng = np.random.default_rng(0)
    x = np.stack([random_steps(rng, 500) for _ in range(8)]).tolist()
    heavy = np.stack([random_steps(rng, 4000) for _ in range(256)]).tolist()  # ~1 s of parsing and compute
    env = {"LSTM_DRAIN_TIMEOUT_S": "10", "LSTM_MAX_BODY_BYTES": "100000000", "LSTM_MAX_BATCH_SIZE": "256"}
    with running_server(env) as server:
        outcomes: list[str] = []
        stop = asyncio.Event()

        async def client_loop(client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                try:
                    r = await client.post("/v1/models/demand/predict", json={"inputs": x})
                except httpx.ConnectError:
                    outcomes.append("refused")  # the listener is closed: never reached the app
                    return
                outcomes.append(str(r.status_code))
                if r.status_code == 503:
                    return

        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            tasks = [asyncio.ensure_future(client_loop(client)) for _ in range(8)]
            while outcomes.count("200") < 16:
                await asyncio.sleep(0.02)
            rows_before = _rows_dispatched((await client.get("/metrics")).text)
            in_flight = asyncio.ensure_future(client.post("/v1/models/demand/predict", json={"inputs": heavy}))
            while _rows_dispatched((await client.get("/metrics")).text) < rows_before + 256:
                await asyncio.sleep(0.01)  # until the heavy batch is running
            t0 = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            for _ in range(100):  # the signal is handled on the server's next loop turn
                ready = await client.get("/v2/health/ready")
                if ready.status_code == 503:
                    break
                await asyncio.sleep(0.01)
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            stop.set()
            heavy_reply = await asyncio.wait_for(in_flight, 30)
        rc = await asyncio.to_thread(server.proc.wait, 30)
        elapsed = time.monotonic() - t0
    assert rc == 0, server.log()
    assert elapsed < 10 + 5
    assert ready.status_code == 503 and ready.json()["reason"] == "the service is shutting down"
    assert set(outcomes) <= {"200", "503", "refused"}, outcomes
    assert "503" in outcomes, "work arriving after SIGTERM is refused with 503"
    assert heavy_reply.status_code == 200, "the batch running at SIGTERM completes"


def _rows_dispatched(metrics: str) -> float:
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines() if ln.startswith("lstm_batch_size_sum"))
