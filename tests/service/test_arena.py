"""The memory store keeps every session's state in one arena per model version.

A stored record's state is a view of its row; a batch reads its states with one copy
(``gather``) and a commit writes each new state into its row. Rows are freed by delete,
expiry and unload, reused last freed first, and the arena doubles when full with every
stored view made again. Exactness through the data plane, across a growth in the middle
of a batch, is checked against the offline run."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from harness.paths import DEFAULT_MODEL
from service.app import make_store
from service.config import Settings
from service.core.streams import decide
from service.core.work import StepResult, StepWork
from service.errors import SessionNotFound
from service.metrics import Metrics
from service.sessions.arena import FIRST_CAPACITY, Arena
from service.sessions.memory import MemoryStore
from service.sessions.record import SessionRecord, digest, new_session_id, stack_states
from tests.service.conftest import Offline, data_plane, random_steps

SHAPE = (2, 1, 8)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def record(rng: np.random.Generator, now: float, version: str = "1") -> SessionRecord:
    state = rng.normal(size=SHAPE).astype(np.float32)
    return SessionRecord.fresh(new_session_id("m", version), "m", version, "ab" * 32, state, 0, None, now)


async def filled(n: int, seed: int = 0) -> tuple[MemoryStore, list[SessionRecord], list[np.ndarray]]:
    """A memory store with ``n`` sessions, and the states they were created with (copies)."""
    clock = Clock()
    store = MemoryStore(60.0, sweep_interval_s=3600, clock=clock)
    rng = np.random.default_rng(seed)
    recs = [record(rng, clock.now) for _ in range(n)]
    given = [r.state.copy() for r in recs]
    for r in recs:
        await store.create(r, max_sessions=10 * n)
    return store, recs, given


def test_rows_are_reused_last_freed_first() -> None:
    arena = Arena(SHAPE, capacity=4)
    slots = [arena.add(np.full(SHAPE, k, np.float32))[0] for k in range(3)]
    assert slots == [0, 1, 2] and arena.used == 3
    arena.release(1)
    arena.release(0)
    assert arena.add(np.zeros(SHAPE, np.float32)) == (0, False)
    assert arena.add(np.zeros(SHAPE, np.float32)) == (1, False)
    np.testing.assert_array_equal(arena.view(2), np.full(SHAPE, 2, np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        arena.add(np.zeros((2, 1, 9), np.float32))


async def test_a_stored_state_is_a_row_of_the_arena_and_a_copy_of_what_was_given() -> None:
    store, recs, given = await filled(5)
    arena = store.arena("m", "1")
    assert arena is not None and arena.used == 5
    for r, g in zip(await store.get_many([r.id for r in recs]), given, strict=True):
        assert r is not None and np.shares_memory(r.state, arena.data)
        np.testing.assert_array_equal(r.state, g)
    np.testing.assert_array_equal(store.gather(recs), np.stack(given, axis=2))


async def test_growth_keeps_every_state_and_the_stored_views_follow() -> None:
    """Three doublings: every stored record's view is of the current array, and reads exact."""
    n = 4 * FIRST_CAPACITY + 1
    store, recs, given = await filled(n)
    arena = store.arena("m", "1")
    assert arena is not None and arena.data.shape[2] == 8 * FIRST_CAPACITY
    got = await store.get_many([r.id for r in recs])
    assert all(r is not None and np.shares_memory(r.state, arena.data) for r in got)
    np.testing.assert_array_equal(np.stack([r.state for r in got], axis=2), np.stack(given, axis=2))
    np.testing.assert_array_equal(store.gather(recs[::7]), np.stack(given[::7], axis=2))


async def test_gather_mixes_in_records_with_no_row() -> None:
    """A sequence's start steps from zeros it does not store yet: gathered with the rest, from
    the arena, or stacked while its version has no arena."""
    store, recs, given = await filled(3)
    start = recs[1].restarted(np.full(SHAPE, 0.5, np.float32), 1_000.0)
    assert start.slot == -1
    want = np.stack([given[0], start.state, given[2]], axis=2)
    np.testing.assert_array_equal(store.gather([recs[0], start, recs[2]]), want)
    np.testing.assert_array_equal(stack_states([recs[0], start, recs[2]]), want)
    other = record(np.random.default_rng(9), 1_000.0, version="2")
    np.testing.assert_array_equal(store.gather([other]), other.state[:, :, None])


async def test_the_arena_reserves_the_stores_rows_and_never_grows_within_them() -> None:
    """A store made for ``rows`` sessions (the service gives it LSTM_MAX_SESSIONS) reserves
    them at its version's first session: no copy of the array, ever, while they suffice."""
    store = MemoryStore(60.0, sweep_interval_s=3600, rows=1000)
    rng = np.random.default_rng(2)
    await store.create(record(rng, 1_000.0), max_sessions=1000)
    arena = store.arena("m", "1")
    assert arena is not None and arena.data.shape[2] == 1000
    data = arena.data
    for _ in range(999):
        await store.create(record(rng, 1_000.0), max_sessions=1000)
    assert arena.data is data and arena.used == 1000


async def test_the_service_store_reserves_max_sessions_rows() -> None:
    settings = Settings(model_repository=DEFAULT_MODEL.parent.parent, max_sessions=1234)
    store = make_store(settings, Metrics())
    assert isinstance(store, MemoryStore)
    await store.create(record(np.random.default_rng(3), store.clock()), settings.max_sessions)
    arena = store.arena("m", "1")
    assert arena is not None and arena.data.shape[2] == 1234


async def test_a_record_of_a_wrong_shape_changes_nothing() -> None:
    store, recs, given = await filled(2)
    bad = replace(recs[0], state=np.zeros((2, 1, 9), np.float32), slot=-1)
    with pytest.raises(ValueError, match="does not fit"):
        store.restore([bad])
    got = await store.get_many([r.id for r in recs])
    np.testing.assert_array_equal(np.stack([r.state for r in got], axis=2), np.stack(given, axis=2))  # type: ignore[union-attr]


async def test_a_replayed_reply_keeps_the_state_it_was_given() -> None:
    """A retry answered from the stored reply carries the session's state at that moment: a
    copy, which the session's next commit to its row does not change."""
    store, recs, _ = await filled(1)
    (cur,) = await store.get_many([recs[0].id])
    assert cur is not None
    x = np.ones((1, 3), np.float32)
    done = cur.advanced(np.full(SHAPE, 1.0, np.float32), np.ones((1, 1), np.float32), digest(x), 1_000.0)
    assert await store.commit_many([done]) == [True]
    work = StepWork(cur.id, x, cur.step, digest(x), None)
    card = SimpleNamespace(key="m/1")
    replay = decide(work, done, card, store)  # type: ignore[arg-type]
    assert isinstance(replay, StepResult) and replay.replayed
    np.testing.assert_array_equal(replay.state, np.full(SHAPE, 1.0, np.float32))
    later = done.advanced(np.full(SHAPE, 2.0, np.float32), np.ones((1, 1), np.float32), b"", 1_000.0)
    assert await store.commit_many([later]) == [True]
    np.testing.assert_array_equal(replay.state, np.full(SHAPE, 1.0, np.float32))


async def test_a_commit_writes_its_row_and_a_lost_one_writes_nothing() -> None:
    store, recs, given = await filled(3)
    (cur,) = await store.get_many([recs[1].id])
    assert cur is not None
    new = np.full(SHAPE, 7.0, np.float32)
    stale = replace(cur, state=np.full(SHAPE, 9.0, np.float32), rev=cur.rev + 2, slot=-1)
    assert await store.commit_many([stale]) == [False]
    np.testing.assert_array_equal(store.gather(recs), np.stack(given, axis=2))
    nxt = replace(cur, state=new, rev=cur.rev + 1, slot=-1)
    assert await store.commit_many([nxt]) == [True]
    assert nxt.slot == cur.slot and np.shares_memory(nxt.state, store.arena("m", "1").data)  # type: ignore[union-attr]
    np.testing.assert_array_equal(store.gather(recs), np.stack([given[0], new, given[2]], axis=2))


async def test_delete_expiry_and_unload_free_rows() -> None:
    clock = Clock()
    store = MemoryStore(60.0, sweep_interval_s=3600, clock=clock)
    rng = np.random.default_rng(1)
    old = [record(rng, clock.now) for _ in range(4)]
    for r in old:
        await store.create(r, max_sessions=100)
    clock.now += 61
    young = [record(rng, clock.now) for _ in range(2)] + [record(rng, clock.now, version="2")]
    for r in young:
        await store.create(r, max_sessions=100)  # no sweep yet: 7 < 100
    arena = store.arena("m", "1")
    assert arena is not None and arena.used == 6
    assert store.sweep() == 4 and arena.used == 2
    assert await store.delete(young[0].id)
    assert arena.used == 1
    reused = record(rng, clock.now)
    await store.create(reused, max_sessions=100)
    assert reused.slot == young[0].slot  # the row freed last
    assert await store.delete_version("m", "1") == 2
    assert store.arena("m", "1") is None and store.arena("m", "2") is not None


async def test_restored_sessions_get_rows() -> None:
    """The state directory's sessions come back into the arena, each exact."""
    store, recs, given = await filled(3)
    kept = [replace(r, state=r.state.copy(), slot=-1) for r in store.records()]
    again = MemoryStore(60.0, sweep_interval_s=3600, clock=store.clock)
    again.restore(kept)
    arena = again.arena("m", "1")
    assert arena is not None and arena.used == 3
    got = await again.get_many([r.id for r in recs])
    np.testing.assert_array_equal(np.stack([r.state for r in got], axis=2), np.stack(given, axis=2))  # type: ignore[union-attr]


async def test_interleaved_sequences_across_a_growth_match_the_offline_run(offline: Offline) -> None:
    """More sequences than the arena's rows (a store that reserved fewer than it comes to hold,
    as after restoring a state file past a lowered limit), started in the same batches as other
    sequences' steps (the arena doubles while a batch commits): every output is the offline
    run's, 1e-5 in the model's scaled units."""
    n, steps = FIRST_CAPACITY + 40, 3
    rng = np.random.default_rng(5)
    xs = [random_steps(rng, steps) for _ in range(n)]
    settings = Settings(model_repository=DEFAULT_MODEL.parent.parent, max_batch_size=64)
    store = MemoryStore(60.0, sweep_interval_s=3600, rows=FIRST_CAPACITY)
    async with data_plane(settings, store=store) as dp:

        async def run(seq: int) -> np.ndarray:
            out = []
            for t in range(steps):
                _, res = await dp.sessions.sequence_step("demand", None, seq, xs[seq][t : t + 1], start=t == 0)
                out.append(res.outputs)
            return np.concatenate(out)

        # batches of 64: the first sequences' later steps share batches with the last ones' starts
        got = await asyncio.gather(*(run(k) for k in range(n)))
        arena = store.arena("demand", "1")
        assert arena is not None and arena.used == n and arena.data.shape[2] == 2 * FIRST_CAPACITY
        assert all(np.shares_memory(r.state, arena.data) for r in store.records())
    for x, y in zip(xs, got, strict=True):
        offline.assert_outputs_close(y, offline.run(x)[0])


async def test_a_row_freed_and_taken_while_a_step_runs_is_not_written(offline: Offline) -> None:
    """A session deleted while its step runs on the worker thread, and its row taken by a new
    session meanwhile: the step finds its session gone (404) and writes nothing; the new
    session's state is the one it was created with."""
    settings = Settings(model_repository=DEFAULT_MODEL.parent.parent, inline_compute_us=0)  # every call in the pool
    store = MemoryStore(60.0, sweep_interval_s=3600)
    async with data_plane(settings, store=store) as dp:
        w = dp.worker("demand")
        a = await dp.sessions.create("demand")
        entered, release = threading.Event(), threading.Event()
        run = w.model.run

        def held(*args: Any) -> Any:
            w.model.run = run  # type: ignore[method-assign]
            entered.set()
            release.wait(30)
            return run(*args)

        w.model.run = held  # type: ignore[method-assign]
        step = asyncio.ensure_future(dp.sessions.step(a.id, random_steps(np.random.default_rng(6), 1)))
        assert await asyncio.to_thread(entered.wait, 30)
        await dp.sessions.delete(a.id)
        h0 = np.full((offline.layers, offline.hidden), 0.25, np.float32)
        c0 = np.full((offline.layers, offline.hidden), -0.5, np.float32)
        b = await dp.sessions.create("demand", h0=h0, c0=c0)
        assert b.slot == a.slot  # the row freed last
        release.set()
        with pytest.raises(SessionNotFound):
            await step
        snap = await dp.sessions.export(b.id)
        np.testing.assert_array_equal(np.asarray(snap["h"], np.float32), h0)
        np.testing.assert_array_equal(np.asarray(snap["c"], np.float32), c0)


async def test_rows_the_system_will_not_map_are_grown_as_needed(caplog: pytest.LogCaptureFixture) -> None:
    """More rows than an address space holds (2**42 rows of 64 bytes: 256 TiB, past the 128
    TiB a process may map): the store says so and grows its rows as needed."""
    store = MemoryStore(60.0, sweep_interval_s=3600, rows=2**42)
    rng = np.random.default_rng(4)
    rec = record(rng, 1_000.0)
    with caplog.at_level("WARNING", logger="service.sessions"):
        await store.create(rec, max_sessions=10)
    arena = store.arena("m", "1")
    assert arena is not None and arena.data.shape[2] == FIRST_CAPACITY
    assert "could not reserve 4398046511104 session rows" in caplog.text


def test_the_arena_is_zero_filled_and_writable() -> None:
    arena = Arena(SHAPE, capacity=3)
    assert arena.data.flags.writeable and not arena.data.any()
    slot, _ = arena.add(np.full(SHAPE, 3.0, np.float32))
    np.testing.assert_array_equal(arena.gather([slot, 2]), np.stack([np.full(SHAPE, 3.0), np.zeros(SHAPE)], axis=2))
