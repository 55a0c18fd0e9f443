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
    with running_server({"LSTM_DRAIN_TIMEOUT_S": "10"}) as server:
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
            t0 = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            ready = await client.get("/v2/health/ready")
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            stop.set()
        rc = await asyncio.to_thread(server.proc.wait, 30)
        elapsed = time.monotonic() - t0
    assert rc == 0, server.log()
    assert elapsed < 10 + 5
    assert ready.status_code == 503 and ready.json()["reason"] == "the service is shutting down"
    assert set(outcomes) <= {"200", "503", "refused"}, outcomes
    assert "503" in outcomes, "work arriving after SIGTERM is refused with 503"
