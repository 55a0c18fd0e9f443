"""One contract, three stores: memory, a real redis-server, and a real 3-node Redis Cluster."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np
import pytest

from harness.redis import redis_cluster, redis_server
from service.errors import CapacityExceeded
from service.sessions.memory import MemoryStore
from service.sessions.record import LastStep, SessionRecord, new_session_id
from service.sessions.redis_store import LIVE_SLACK, RedisStore


@pytest.fixture(scope="module")
def single():
    with redis_server() as s:
        yield s


@pytest.fixture(scope="module")
def cluster():
    with redis_cluster() as nodes:
        yield nodes


@pytest.fixture(params=["memory", "redis", "cluster"])
async def make_store(request):
    stores = []

    async def make(ttl_s: float = 60.0, expired: list | None = None, clock=time.time):
        on_expire = expired.append if expired is not None else None
        if request.param == "memory":
            store = MemoryStore(ttl_s, sweep_interval_s=3600, on_expire=on_expire, clock=clock)
        elif request.param == "redis":
            server = request.getfixturevalue("single")
            server.flush()
            store = RedisStore(server.url, ttl_s, on_expire=on_expire)
        else:
            nodes = request.getfixturevalue("cluster")
            for n in nodes:
                n.flush()
            store = RedisStore(nodes[0].url, ttl_s, cluster=True, on_expire=on_expire)
        await store.start()
        stores.append(store)
        return store

    yield make
    for s in stores:
        await s.close()


def record(step: int = 0, last: bool = False) -> SessionRecord:
    rng = np.random.default_rng(step)
    now = time.time()
    return SessionRecord(
        id=new_session_id("demand", "1"),
        model="demand",
        version="1",
        sha256="ab" * 32,
        state=rng.normal(size=(2, 2, 8)).astype(np.float32),
        step=step,
        created=now,
        last_used=now,
        owner="key-1" if last else None,
        last=LastStep(3, b"0123456789abcdef", rng.normal(size=(4, 1)).astype(np.float32)) if last else None,
    )


def same(a: SessionRecord, b: SessionRecord) -> None:
    assert (a.id, a.model, a.version, a.sha256, a.step, a.rev, a.owner) == (
        b.id,
        b.model,
        b.version,
        b.sha256,
        b.step,
        b.rev,
        b.owner,
    )
    assert np.array_equal(a.state, b.state) and a.state.dtype == np.float32
    assert a.created == b.created and a.last_used == b.last_used
    assert (a.last is None) == (b.last is None)
    if a.last and b.last:
        assert (a.last.from_step, a.last.digest) == (b.last.from_step, b.last.digest)
        assert np.array_equal(a.last.outputs, b.last.outputs)


async def test_create_and_read_back_exactly(make_store):
    store = await make_store()
    recs = [record(0), record(5, last=True)]
    for r in recs:
        await store.create(r, 10)
    got = await store.get_many([recs[1].id, "demand.1.missing", recs[0].id])
    assert got[1] is None
    same(got[0], recs[1])
    same(got[2], recs[0])
    assert await store.count() == 2


async def test_compare_and_set(make_store):
    store = await make_store()
    r = record()
    await store.create(r, 10)
    nxt = replace(r, step=1, rev=1, state=r.state + 1)
    assert await store.commit_many([nxt]) == [True]
    assert await store.commit_many([nxt]) == [False], "a second write from the same base loses"
    stale = replace(r, step=9, rev=1)
    assert await store.commit_many([stale]) == [False]
    (cur,) = await store.get_many([r.id])
    same(cur, nxt)
    missing = replace(record(), rev=1)
    assert await store.commit_many([missing, replace(nxt, rev=2, step=2)]) == [False, True]


async def test_concurrent_writers_from_one_base_exactly_one_wins(make_store):
    store = await make_store()
    r = record()
    await store.create(r, 10)
    results = await asyncio.gather(*(store.commit_many([replace(r, rev=1, step=i + 1)]) for i in range(8)))
    assert sum(res[0] for res in results) == 1


async def test_capacity_refuses_and_never_evicts(make_store):
    store = await make_store()
    recs = [record() for _ in range(3)]
    for r in recs:
        await store.create(r, 3)
    with pytest.raises(CapacityExceeded):
        await store.create(record(), 3)
    assert all(x is not None for x in await store.get_many([r.id for r in recs]))


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_idle_sessions_expire_and_commits_refresh(make_store, request):
    """The memory store runs on an injected clock. Redis keeps time itself, so its variants use
    a real 2 s TTL and check each side of it with a second of margin: ``b``, refreshed half a
    TTL after ``a`` was created, outlives ``a`` by that long."""
    expired: list[int] = []
    memory = request.node.callspec.params["make_store"] == "memory"
    clock = FakeClock()
    ttl = 60.0 if memory else 2.0
    store = await make_store(ttl_s=ttl, expired=expired, clock=clock if memory else time.time)
    now = clock if memory else time.time
    a, b = replace(record(), last_used=now()), replace(record(), last_used=now())
    t0 = time.monotonic()
    await store.create(a, 10)
    await store.create(b, 10)
    if memory:
        clock.now += ttl / 2
    else:
        await asyncio.sleep(ttl / 2)
    assert await store.commit_many([replace(b, rev=1, step=1, last_used=now())]) == [True]
    if memory:
        clock.now += ttl / 2 + 1
    else:  # until a is gone (never before its TTL), then b must still be there
        while (await store.get_many([a.id]))[0] is not None:
            assert time.monotonic() - t0 < 10 * ttl, "a never expired"
            await asyncio.sleep(0.02)
        assert time.monotonic() - t0 >= ttl, "a expired before its TTL"
    got = await store.get_many([a.id, b.id])
    assert got[0] is None and got[1] is not None
    if not memory:  # Redis's live set counts an expired session up to LIVE_SLACK of the TTL late
        while await store.count() != 1:
            assert time.monotonic() - t0 < (1 + 2 * LIVE_SLACK) * ttl + 5, "a is still counted as live"
            await asyncio.sleep(0.02)
    assert await store.count() == 1 and sum(expired) == 1
    await store.create(record(), 2)  # the expired one no longer counts towards capacity


async def test_delete(make_store):
    store = await make_store()
    r = record()
    await store.create(r, 10)
    assert await store.delete(r.id) is True
    assert await store.delete(r.id) is False
    assert await store.get_many([r.id]) == [None]
    assert await store.count() == 0


async def test_sessions_of_a_version_are_counted_and_removed(make_store):
    """What unloading a model version relies on: its sessions (sequence ids included) are
    counted, and a forced unload removes them, freeing their capacity and their key's."""
    store = await make_store()
    v1 = [record(), record(last=True), replace(record(), id="demand.1.~iMTA")]  # a sequence's id
    v2 = [replace(record(), id=new_session_id("demand", "2"), version="2")]
    other = [replace(record(), id=new_session_id("demand", "12"), version="12")]  # "demand.1" is not its prefix
    for r in v1 + v2 + other:
        await store.create(r, 10, max_per_owner=1)
    assert [await store.count_version("demand", v) for v in ("1", "2", "12", "3")] == [3, 1, 1, 0]
    assert await store.delete_version("demand", "1") == 3
    assert await store.count_version("demand", "1") == 0
    assert await store.get_many([r.id for r in v1]) == [None, None, None]
    assert await store.count() == 2
    assert await store.delete_version("demand", "1") == 0
    await store.create(record(last=True), 10, max_per_owner=1)  # key-1's removed session no longer counts


async def test_the_redis_cache_keeps_a_row_not_its_batch(single):
    """The batch handler hands a store records whose state is a row of its batch's new states:
    the Redis store's cache keeps a copy of that row, never a view that would keep the whole
    batch's array alive."""
    single.flush()
    store = RedisStore(single.url, 60.0, cache_size=16)
    await store.start()
    try:
        rec = record()
        await store.create(rec, 100)
        batch = np.random.default_rng(1).normal(size=(2, 2, 5, 8)).astype(np.float32)
        nxt = replace(rec, state=batch[:, :, 3], rev=rec.rev + 1)
        assert await store.commit_many([nxt]) == [True]
        (cached,) = await store.get_many([rec.id], trust_cache=True)
        assert cached is not None and not np.shares_memory(cached.state, batch)
        np.testing.assert_array_equal(cached.state, batch[:, :, 3])
    finally:
        await store.close()
