"""The memory store with LSTM_STATE_DIR: sessions survive a graceful restart of the process."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.reference import random_steps
from harness.server import running_server
from service.sessions import state_file
from tests.service.streams import Clients

pytestmark = pytest.mark.integration

SESSIONS = 100
STEPS = 8


async def stream(c: httpx.AsyncClient, clients: Clients, sid: str, x: np.ndarray, k: int) -> list:
    """Send ``x`` in chunks of 1-3 steps with ``expected_step``; on 503 (draining) or a dropped
    connection, wait for the server to come back and resend the same request."""
    outs: list = []
    t = 0
    while t < len(x):
        n = min(1 + (k + t) % 3, len(x) - t)
        here = clients.url
        try:
            r = await c.post(
                f"{here}/v1/sessions/{sid}/step", json={"inputs": x[t : t + n].tolist(), "expected_step": t}
            )
        except httpx.TransportError:
            r = None
        if r is None or r.status_code == 503:
            await clients.park()
            continue
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["step"] == t + n
        outs += body["outputs"]
        t += n
        await clients.ack(k, t)
    await clients.finished()
    return outs


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_sigterm_mid_run_then_restart_continues_100_sessions_exactly(tmp_path: Path, offline):
    env = {"LSTM_STATE_DIR": str(tmp_path), "LSTM_DRAIN_TIMEOUT_S": "10"}
    rng = np.random.default_rng(7)
    seqs = [random_steps(rng, STEPS) for _ in range(SESSIONS)]
    clients = Clients(SESSIONS)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32)) as c:
        with running_server(env) as first:
            clients.url = first.url
            ids = [
                (await c.post(f"{first.url}/v1/sessions", json={"model": "demand"})).json()["session_id"] for _ in seqs
            ]
            tasks = [asyncio.ensure_future(stream(c, clients, ids[k], seqs[k], k)) for k in range(SESSIONS)]
            await clients.until(lambda: sum(clients.acked) >= SESSIONS * STEPS // 3)
            first.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(first.proc.wait, 30) == 0
            assert "saved 100 session(s)" in first.log()
            # every client has its last reply (or its refusal) in hand: none is between the two
            await asyncio.wait_for(clients.settled(), 30)
            at_stop = list(clients.acked)
        assert (tmp_path / state_file.FILE_NAME).exists()
        assert clients.done < SESSIONS and 0 < sum(at_stop) < SESSIONS * STEPS, "the stop came mid-run"
        with running_server(env) as second:
            assert "restored 100 session(s)" in second.log()
            assert not (tmp_path / state_file.FILE_NAME).exists(), "the file is consumed at start"
            # every session is exactly where its client was told it is: no acknowledged step lost,
            # no step applied that its client was not told of
            steps = await asyncio.gather(*(c.get(f"{second.url}/v1/sessions/{sid}") for sid in ids))
            assert [s.json()["step"] for s in steps] == at_stop
            await clients.resume(second.url)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
            for k, outs in enumerate(results):
                want, _ = offline.run(seqs[k])
                offline.assert_outputs_close(outs, want)
            steps = await asyncio.gather(*(c.get(f"{second.url}/v1/sessions/{sid}") for sid in ids))
            assert [s.json()["step"] for s in steps] == [STEPS] * SESSIONS
            assert metric((await c.get(f"{second.url}/metrics")).text, "lstm_sessions_restored_total") == SESSIONS


async def test_a_corrupt_state_file_is_refused_and_the_service_still_starts(tmp_path: Path):
    env = {"LSTM_STATE_DIR": str(tmp_path)}
    async with httpx.AsyncClient(timeout=30) as c:
        with running_server(env) as s:
            sid = (await c.post(f"{s.url}/v1/sessions", json={"model": "demand"})).json()["session_id"]
            r = await c.post(f"{s.url}/v1/sessions/{sid}/step", json={"inputs": [[30000, 8.0, 2]]})
            assert r.status_code == 200
        path = tmp_path / state_file.FILE_NAME
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 40])  # a torn write
        with running_server(env) as s:
            assert "refused the session state file" in s.log()
            assert (await c.get(f"{s.url}/v1/sessions/{sid}")).status_code == 404
            text = (await c.get(f"{s.url}/metrics")).text
            assert metric(text, 'lstm_sessions_refused_total{reason="file"}') == 1
            r = await c.post(f"{s.url}/v1/sessions", json={"model": "demand"})
            assert r.status_code == 201, "a fresh session works after the refusal"
        assert (tmp_path / (state_file.FILE_NAME + ".corrupt")).exists()
