"""What a batch of steps costs in Redis, counted by Redis itself (``INFO commandstats``).

A process steps its sessions from the records it last wrote: a steady stream reads nothing
and sends one script call per batch, the compare-and-set of all its steps -- one round trip
per batch, and no write to the shared live set. When another replica has stepped a session
since, the stale copy's compare-and-set fails, the session is read once and run again,
and the stream stays exact.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import numpy as np
import pytest

from harness.procs import free_port
from harness.redis import RedisServer, _cli
from service.sessions.redis_store import RedisStore
from tests.service.conftest import Offline, create, random_steps, running_server
from tests.service.test_store_contract import record

SESSIONS = 8
STEPS = 15
IN_SCRIPT = ("hget", "hset", "pexpire")  # the compare-and-set script's own calls (counted by Redis too)


def all_calls(redis: RedisServer) -> dict[str, int]:
    """Calls per command since the last ``CONFIG RESETSTAT`` (``cmdstat_evalsha`` -> 12),
    the script's own calls included."""
    out = {}
    for line in _cli(redis.port, "info", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line.partition(":")
            calls = dict(f.split("=") for f in fields.split(","))["calls"]
            out[name.removeprefix("cmdstat_")] = int(calls)
    out.pop("config|resetstat", None)
    return out


def command_calls(redis: RedisServer) -> dict[str, int]:
    """The commands a client sent (the script's own calls left out)."""
    out = all_calls(redis)
    for name in IN_SCRIPT:
        out.pop(name, None)
    return out


def batches(metrics: str) -> float:
    return next(float(ln.split()[-1]) for ln in metrics.splitlines() if ln.startswith("lstm_batch_size_count"))


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory):
    r = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    r.start()
    yield r
    r.stop()


async def stream(client: httpx.AsyncClient, sid: str, x, start: int) -> list[list[float]]:
    outs = []
    for k, row in enumerate(x):
        r = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": [row.tolist()], "expected_step": start + k})
        assert r.status_code == 200, r.text
        outs += r.json()["outputs"]
    return outs


def test_a_steady_stream_costs_one_script_call_per_batch(redis, offline: Offline):
    """One script call per batch, however the batcher grouped the steps (how many batches
    held several is up to timing; that several sessions go in one call is the next test's)."""
    rng = np.random.default_rng(3)
    xs = [random_steps(rng, STEPS) for _ in range(SESSIONS)]
    env = {"LSTM_SESSION_STORE": "redis", "LSTM_REDIS_URL": redis.url, "LSTM_WORKERS": "1"}
    with running_server(env) as server:

        async def run() -> tuple[list, dict[str, int], float]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                sids = [await create(client) for _ in range(SESSIONS)]
                first = await asyncio.gather(*(stream(client, s, x[:1], 0) for s, x in zip(sids, xs, strict=True)))
                before = batches((await client.get("/metrics")).text)
                _cli(redis.port, "config", "resetstat")
                rest = await asyncio.gather(*(stream(client, s, x[1:], 1) for s, x in zip(sids, xs, strict=True)))
                calls = all_calls(redis)
                ran = batches((await client.get("/metrics")).text) - before
                outs = [a + b for a, b in zip(first, rest, strict=True)]
                return outs, calls, ran

        outs, calls, ran = asyncio.run(run())
    for x, got in zip(xs, outs, strict=True):
        offline.assert_outputs_close(got, offline.run(x)[0])
    steps = SESSIONS * (STEPS - 1)
    written = {"hget": steps, "hset": steps, "pexpire": steps}
    assert calls == {"evalsha": ran, **written}, f"a steady stream sends one script call per batch: {calls}"
    assert ran >= STEPS, "the steps ran in batches of their own"


def test_a_session_stepped_by_another_replica_is_read_again(redis, offline: Offline):
    """Two replicas take turns on one session, each time from a copy the other made stale:
    a step without ``expected_step`` fails its compare-and-set, and one with it is refused by
    the stale copy; either way the session is read once and the step runs from the stored
    state. The stream stays exact."""
    x = random_steps(np.random.default_rng(4), 12)
    env = {"LSTM_SESSION_STORE": "redis", "LSTM_REDIS_URL": redis.url, "LSTM_WORKERS": "1"}
    with running_server(env) as a, running_server(env) as b:

        async def run() -> tuple[list, list[dict[str, int]]]:
            async with (
                httpx.AsyncClient(base_url=a.url, timeout=30) as ca,
                httpx.AsyncClient(base_url=b.url, timeout=30) as cb,
            ):
                sid = await create(ca)
                await stream(ca, sid, x[:2], 0)  # a holds the record it wrote
                await stream(cb, sid, x[2:4], 2)  # b reads it: a's copy is now stale
                calls = []
                _cli(redis.port, "config", "resetstat")
                r = await ca.post(f"/v1/sessions/{sid}/step", json={"inputs": x[4:5].tolist()})
                assert r.status_code == 200 and r.json()["step"] == 5, r.text
                outs = r.json()["outputs"]
                calls.append(command_calls(redis))
                _cli(redis.port, "config", "resetstat")
                outs += await stream(cb, sid, x[5:6], 5)  # b's copy is at step 4
                calls.append(command_calls(redis))
                outs += await stream(cb, sid, x[6:], 6)
                return outs, calls

        outs, (no_expected, expected) = asyncio.run(run())
    offline.assert_outputs_close(outs, offline.run(x)[0][4:])
    # a never wrote the session's score in the live set (b did): it writes it once; b knows its own
    assert no_expected == {"evalsha": 2, "hmget": 1, "zadd": 1}, f"a stale write, a read, a write: {no_expected}"
    assert expected == {"evalsha": 1, "hmget": 1}, f"a read, then the write: {expected}"


async def test_a_batch_of_writes_is_one_script_call(redis):
    """Whatever the batcher makes of a stream (above), a batch's writes are one call: some
    win and some lose their compare-and-set within it, each on its own."""
    store = RedisStore(redis.url, 60.0, cache_size=16)
    await store.start()
    try:
        recs = [record(k) for k in range(5)]
        for r in recs:
            await store.create(r, 100)
        first = [replace(r, rev=r.rev + 1, step=1) for r in recs]
        assert await store.commit_many(first) == [True] * 5  # the script is loaded once, here
        _cli(redis.port, "config", "resetstat")
        nxt = [replace(r, rev=r.rev + 1, step=2) for r in first]
        nxt[2] = replace(nxt[2], rev=nxt[2].rev + 1)  # written from a base that is not stored
        assert await store.commit_many(nxt) == [True, True, False, True, True]
        assert all_calls(redis) == {"evalsha": 1, "hget": 5, "hset": 4, "pexpire": 4}
        got = await store.get_many([r.id for r in recs])  # read from Redis (the cache is not trusted)
        assert [g.step for g in got if g is not None] == [2, 2, 1, 2, 2]
    finally:
        await store.close()


async def test_a_redis_that_lost_its_scripts_loads_them_again(redis):
    """A restarted Redis (or SCRIPT FLUSH) has forgotten the compare-and-set script: the next
    write loads it again and goes through; an empty batch sends nothing."""
    store = RedisStore(redis.url, 60.0, cache_size=16)
    await store.start()
    try:
        rec = record(1)
        await store.create(rec, 100)
        assert await store.commit_many([replace(rec, rev=rec.rev + 1, step=2)]) == [True]
        _cli(redis.port, "script", "flush")
        _cli(redis.port, "config", "resetstat")
        assert await store.commit_many([]) == []
        assert all_calls(redis) == {}
        _cli(redis.port, "config", "resetstat")
        assert await store.commit_many([replace(rec, rev=rec.rev + 2, step=3)]) == [True]
        calls = command_calls(redis)
        assert calls == {"evalsha": 2, "script|load": 1}, calls  # refused, loaded, written
        (got,) = await store.get_many([rec.id])
        assert got is not None and got.step == 3
    finally:
        await store.close()


def v2_step(x: np.ndarray, seq: int, **flags: bool) -> dict:
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, len(x), 3], "data": x.ravel().tolist()}],
        "parameters": {"sequence_id": seq, **flags},
    }


def test_a_sequence_started_again_elsewhere_is_not_stepped_from_its_earlier_life(redis, offline: Offline):
    """A sequence id lives again after it ended: a replica holding a copy of its earlier life
    must not step from it (the new life's first write has a rev of its own)."""
    rng = np.random.default_rng(5)
    first, second = random_steps(rng, 4), random_steps(rng, 6)
    env = {"LSTM_SESSION_STORE": "redis", "LSTM_REDIS_URL": redis.url, "LSTM_WORKERS": "1"}
    with running_server(env) as a, running_server(env) as b:

        async def run() -> list:
            async with (
                httpx.AsyncClient(base_url=a.url, timeout=30) as ca,
                httpx.AsyncClient(base_url=b.url, timeout=30) as cb,
            ):
                path = "/v2/models/demand/infer"
                assert (await ca.post(path, json=v2_step(first[:2], 7, sequence_start=True))).status_code == 200
                assert (await cb.post(path, json=v2_step(first[2:], 7, sequence_end=True))).status_code == 200
                r = await cb.post(path, json=v2_step(second[:3], 7, sequence_start=True))  # a new life, on b
                outs = r.json()["outputs"][0]["data"]
                r = await ca.post(path, json=v2_step(second[3:], 7))  # a still holds the first life
                assert r.status_code == 200, r.text
                return outs + r.json()["outputs"][0]["data"]

        outs = asyncio.run(run())
    offline.assert_outputs_close(outs, offline.run(second)[0].ravel())


def test_a_write_that_lost_does_not_bring_a_session_back_to_the_live_count(redis):
    """A replica's stale copy whose live-set entry is due for a refresh, of a session another
    replica deleted: its write fails, and the session stays out of the live count."""
    env = {
        "LSTM_SESSION_STORE": "redis",
        "LSTM_REDIS_URL": redis.url,
        "LSTM_WORKERS": "1",
        "LSTM_SESSION_TTL_S": "2",  # the slack (10 %) is used up after 0.2 s
    }
    x = random_steps(np.random.default_rng(6), 2)
    with running_server(env) as a, running_server(env) as b:

        async def run() -> tuple[int, int]:
            async with (
                httpx.AsyncClient(base_url=a.url, timeout=30) as ca,
                httpx.AsyncClient(base_url=b.url, timeout=30) as cb,
            ):
                sid = await create(ca)
                await stream(ca, sid, x[:1], 0)  # a caches it
                assert (await cb.delete(f"/v1/sessions/{sid}")).status_code == 204
                live = int(_cli(redis.port, "zcard", "lstm:live").strip() or 0)
                await asyncio.sleep(0.5)  # past the slack: a's next write would refresh the entry
                r = await ca.post(f"/v1/sessions/{sid}/step", json={"inputs": x[1:].tolist()})
                assert r.status_code == 404, r.text
                return live, int(_cli(redis.port, "zcard", "lstm:live").strip() or 0)

        _cli(redis.port, "flushall")
        before, after = asyncio.run(run())
    assert before == 0 and after == 0
