"""Property tests (hypothesis): collate/split round-trips, and session semantics against a
simple sequential model under any interleaving of steps, retries, deletes and expiries."""

from __future__ import annotations

import asyncio
import time
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.batching.collate import collate, split
from service.config import Settings
from service.core.dataplane import DataPlane
from service.errors import SessionNotFound, StepConflict
from service.metrics import Metrics
from service.sessions.memory import MemoryStore
from tests.conftest import ROOT
from tests.service.conftest import Offline, random_steps

shapes = st.lists(st.tuples(st.integers(1, 3), st.integers(1, 6)), min_size=1, max_size=6)


@given(shapes, st.integers(0, 2**31 - 1))
@settings(max_examples=60, deadline=None)
def test_collate_split_round_trip(req_shapes, seed):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(n, t, 3)).astype(np.float32) for n, t in req_shapes]
    states = [rng.normal(size=(2, 2, n, 5)).astype(np.float32) for n, _ in req_shapes]
    b = collate(xs, np.concatenate(states, axis=2))
    assert b.x.shape[0] == sum(n for n, _ in req_shapes)
    if b.lengths is not None:
        assert b.lengths.tolist() == [t for n, t in req_shapes for _ in range(n)]
    for x, y in zip(xs, split(b, b.x[..., 1:2] * 2), strict=True):
        np.testing.assert_array_equal(y, x[..., 1:2] * 2)


OFFLINE = Offline(ROOT / "models" / "demand" / "1")
TTL = 100.0

op = st.one_of(
    st.tuples(st.just("create")),
    st.tuples(st.just("step"), st.integers(0, 3), st.integers(1, 4), st.sampled_from(["none", "right", "wrong"])),
    st.tuples(st.just("retry"), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.integers(0, 3)),
    st.tuples(st.just("idle"), st.sampled_from([TTL * 0.45, TTL * 1.01])),  # sums never land near TTL
)


@given(st.lists(op, min_size=1, max_size=25), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_session_semantics_match_a_sequential_model(ops, seed):
    asyncio.run(_run(ops, seed))


async def _run(ops, seed):
    rng = np.random.default_rng(seed)
    offset = [0.0]
    real = time.time
    with mock.patch("time.time", lambda: real() + offset[0]):  # "idle" moves every clock forward
        await _ops(ops, rng, offset)


async def _ops(ops, rng, offset):
    store = MemoryStore(TTL, clock=lambda: time.time())
    dp = DataPlane(Settings(model_repository=ROOT / "models", session_ttl_s=TTL), store, Metrics())
    dp.load_models()
    await dp.start()
    try:
        model: dict[str, dict] = {}  # the sequential model: what each session should be
        ids: list[str] = []
        for o in ops:
            kind = o[0]
            if kind == "create":
                rec = await dp.sessions.create("demand")
                ids.append(rec.id)
                model[rec.id] = {"step": 0, "state": None, "last": None, "alive": True, "used": offset[0]}
                continue
            if kind == "idle":
                offset[0] += o[1]
                for m in model.values():
                    if offset[0] - m["used"] > TTL:
                        m["alive"] = False
                continue
            if not ids:
                continue
            sid = ids[o[1] % len(ids)]
            m = model[sid]
            if kind == "delete":
                try:
                    await dp.sessions.delete(sid)
                    assert m["alive"]
                    m["alive"] = False
                except SessionNotFound:
                    assert not m["alive"]
                continue
            if kind == "retry":
                if m["last"] is None:
                    continue
                expected, x, outputs, step_after = m["last"]
                try:
                    res = await dp.sessions.step(sid, x, expected)
                except SessionNotFound:
                    assert not m["alive"]
                    continue
                except StepConflict:
                    assert m["step"] != step_after  # only the last request can be replayed
                    continue
                assert m["alive"] and res.replayed and res.step == m["step"] == step_after
                np.testing.assert_array_equal(res.outputs, outputs)
                continue
            _, _, n, mode = o
            x = random_steps(rng, n)
            expected = {"none": None, "right": m["step"], "wrong": m["step"] + 1}[mode]
            try:
                res = await dp.sessions.step(sid, x, expected)
            except SessionNotFound:
                assert not m["alive"]
                continue
            except StepConflict as e:
                assert m["alive"] and mode == "wrong" and e.current_step == m["step"]
                continue
            assert m["alive"] and mode != "wrong" and not res.replayed
            want, state = OFFLINE.run(x, m["state"])
            OFFLINE.assert_outputs_close(res.outputs, want)
            m["last"] = (m["step"], x, res.outputs, m["step"] + n)
            m["step"] += n
            m["state"] = state
            m["used"] = offset[0]
            assert res.step == m["step"]
        for sid, m in model.items():
            if m["alive"]:
                rec = await dp.sessions.get(sid)
                assert rec.step == m["step"]
                if m["state"] is not None:
                    assert np.max(np.abs(rec.state - m["state"])) <= 1e-5
    finally:
        await dp.stop()
