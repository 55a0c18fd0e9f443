"""The client against a live server: 16 streams through the sync client, the async client and
stream(), each equal to the offline run; models, predict, snapshots and the typed errors."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from lstm_serving_client import (
    AsyncClient,
    Client,
    InvalidInput,
    ModelNotFound,
    SessionExpired,
    StepConflict,
    Unauthorized,
)
from tests.client.conftest import N_STREAMS, assert_exact, chunks, make_streams
from tests.service.conftest import random_steps, running_server

pytestmark = pytest.mark.integration


def test_16_streams_through_the_sync_client_equal_offline(server, offline):
    streams = make_streams(1)
    with Client(server.url) as client:

        def run(k: int) -> tuple[list[list[float]], int]:
            with client.session("demand") as s:
                outs = [y for part in chunks(streams[k], k) for y in s.step(part)]
                return outs, s.step_count

        with ThreadPoolExecutor(N_STREAMS) as pool:
            results = list(pool.map(run, range(N_STREAMS)))
    for x, (outs, steps) in zip(streams, results, strict=True):
        assert_exact(offline, x, outs, steps)


async def test_16_streams_through_the_async_client_equal_offline(server, offline):
    streams = make_streams(2)
    async with AsyncClient(server.url) as client:

        async def run(k: int) -> tuple[list[list[float]], int]:
            async with client.session("demand") as s:
                outs = [y for part in chunks(streams[k], k) for y in await s.step(part)]
                return outs, s.step_count

        results = await asyncio.gather(*(run(k) for k in range(N_STREAMS)))
    for x, (outs, steps) in zip(streams, results, strict=True):
        assert_exact(offline, x, outs, steps)


async def test_16_async_websocket_streams_equal_offline(server, offline):
    streams = make_streams(3)

    async def readings(x: np.ndarray, seed: int):
        """An async source that pauses now and then, so messages carry 1 to many readings."""
        for part in chunks(x, seed, most=12):
            for row in part:
                yield row
            await asyncio.sleep(0)

    async with AsyncClient(server.url) as client:

        async def run(k: int) -> tuple[list[list[float]], int]:
            async with client.session("demand") as s:
                outs = [y async for y in s.stream(readings(streams[k], k))]
                return outs, s.step_count

        results = await asyncio.gather(*(run(k) for k in range(N_STREAMS)))
    for x, (outs, steps) in zip(streams, results, strict=True):
        assert_exact(offline, x, outs, steps)


def test_16_sync_websocket_streams_equal_offline(server, offline):
    streams = make_streams(4)
    with Client(server.url) as client:

        def run(k: int) -> tuple[list[list[float]], int]:
            with client.session("demand") as s:
                first = s.step(streams[k][:3])  # REST and WebSocket steps mix freely
                return first + list(s.stream(iter(streams[k][3:]), max_chunk=8)), s.step_count

        with ThreadPoolExecutor(N_STREAMS) as pool:
            results = list(pool.map(run, range(N_STREAMS)))
    for x, (outs, steps) in zip(streams, results, strict=True):
        assert_exact(offline, x, outs, steps)


def test_models_card_and_predict(server, offline):
    x = random_steps(np.random.default_rng(5), 20)
    with Client(server.url) as client:
        assert client.models() == [{"name": "demand", "versions": ["1"]}]
        card = client.model("demand")
        assert [f["name"] for f in card["features"]] == ["demand", "hour_of_day", "day_of_week"]
        assert card["metrics"]["test"]["model"]["mae"] < card["metrics"]["test"]["persistence"]["mae"]
        p = client.predict("demand", x[None])  # a numpy array is accepted as it is
        want, state = offline.run(x)
        offline.assert_outputs_close(p.outputs[0], want)
        assert np.max(np.abs(np.asarray(p.hn)[:, 0] - state[0])) <= 1e-5
        with pytest.raises(ModelNotFound, match="not served"):
            client.model("nope")


def test_snapshot_restore_continues_the_stream_exactly(server, offline):
    x = random_steps(np.random.default_rng(6), 30)
    with Client(server.url) as client:
        with client.session("demand") as s:
            outs = s.step(x[:12])
            snap = s.snapshot()
        # the session is deleted on exit (the default); the snapshot lives on
        with client.restore(snap) as r:
            assert r.step_count == 12 and r.id != s.id
            outs += r.step(x[12:])
            assert_exact(offline, x, outs, r.step_count)


def test_typed_errors_carry_the_servers_message(server):
    x = random_steps(np.random.default_rng(7), 4)
    with Client(server.url) as client:
        s = client.session("demand", delete_on_exit=False)
        with pytest.raises(InvalidInput, match="3 features") as bad:
            s.step([[1.0, 2.0]])
        assert bad.value.status == 400 and s.step_count == 0
        s.step(x[:1])
        # another writer moves the session: the client raises, and neither skips nor resends
        other = client.resume(s.id)
        assert other.step_count == 1
        other.step(x[1:3])
        with pytest.raises(StepConflict) as conflict:
            s.step(x[1:2])
        assert conflict.value.current_step == 3 and conflict.value.expected_step == 1 and s.step_count == 1
        assert s.resync() == 3
        s.step(x[3:4])
        assert s.step_count == 4
        s.delete()
        with pytest.raises(SessionExpired, match="unknown or has expired"):
            s.step(x[:1])
        s.delete()  # already gone: fine


def test_an_identical_resend_is_answered_by_the_server(server, offline):
    """What a lost reply looks like from the server's side: the same expected_step and inputs
    again give the stored reply, and the session does not advance twice."""
    x = random_steps(np.random.default_rng(8), 6)
    with Client(server.url) as client, client.session("demand") as s:
        first = httpx.post(f"{server.url}/v1/sessions/{s.id}/step", json={"inputs": x[:4].tolist(), "expected_step": 0})
        assert first.status_code == 200
        assert s.step(x[:4]) == first.json()["outputs"] and s.replayed and s.step_count == 4
        outs = first.json()["outputs"] + s.step(x[4:])
        assert not s.replayed
        assert_exact(offline, x, outs, s.info()["step"])


async def test_api_keys(offline):
    x = random_steps(np.random.default_rng(9), 10)
    with running_server({"LSTM_API_KEYS": "k-one,k-two"}) as srv:
        with Client(srv.url) as anonymous, pytest.raises(Unauthorized, match="API key"):
            anonymous.models()
        async with AsyncClient(srv.url, api_key="k-one") as client, client.session("demand") as s:
            outs = await s.step(x[:4])
            outs += [y async for y in s.stream(x[4:])]
            assert_exact(offline, x, outs, s.step_count)
            async with AsyncClient(srv.url, api_key="k-two") as intruder:
                with pytest.raises(SessionExpired):  # another key's session looks like no session
                    await intruder.resume(s.id)
            async with AsyncClient(srv.url, api_key="wrong") as wrong:
                w = await client.resume(s.id)
                w.client = wrong
                with pytest.raises(Unauthorized):
                    [y async for y in w.stream(x[:1])]
