"""Exactly once on every protocol: v2 REST and gRPC (unary and streamed) sequence requests with
``expected_step``, retried as a client does after a lost reply, on both stores; and deadlines
that count the wait behind a session's earlier steps."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from harness.paths import DEFAULT_MODEL
from harness.redis import redis_server
from harness.reference import Offline, random_steps
from harness.server import Server, running_server
from service.app import create_app, make_store
from service.config import Settings
from service.core.dataplane import DataPlane
from service.errors import InvalidInput
from service.metrics import Metrics
from tests.service.conftest import hold_next_batch

pytestmark = pytest.mark.integration

CHUNKS = [3, 1, 2, 1, 1]  # a sequence of 8 steps, in requests of these sizes
INFER = "/v2/models/demand/infer"


@pytest.fixture(scope="module", params=["memory", "redis"])
def store_server(request) -> Iterator[Server]:
    if request.param == "memory":
        with running_server({"LSTM_SESSION_STORE": "memory"}) as s:
            yield s
    else:
        with redis_server() as redis, running_server({"LSTM_SESSION_STORE": "redis", "LSTM_REDIS_URL": redis.url}) as s:
            yield s


def _body(x: np.ndarray, seq: str, t: int, **extra: object) -> dict:
    params = {"sequence_id": seq, "expected_step": t, **extra}
    if t == 0:
        params["sequence_start"] = True
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, *x.shape], "data": x.tolist()}],
        "parameters": params,
    }


def test_v2_rest_retries_are_answered_from_the_stored_reply(store_server: Server, offline: Offline):
    x = random_steps(np.random.default_rng(11), sum(CHUNKS))
    seq = f"rest-{time.monotonic_ns()}"
    got, t = [], 0
    with httpx.Client(base_url=store_server.url, timeout=30) as c:
        for n in CHUNKS:
            first = c.post(INFER, json=_body(x[t : t + n], seq, t))
            retry = c.post(INFER, json=_body(x[t : t + n], seq, t))  # the reply was lost: sent again
            assert first.status_code == retry.status_code == 200, (first.text, retry.text)
            a, b = first.json(), retry.json()
            assert a["outputs"] == b["outputs"], "the retry's reply differs from the first"
            assert a["parameters"] == {"step": t + n}
            assert b["parameters"] == ({"step": t + n, "replayed": True} if t else {"step": t + n})
            got.append(np.asarray(a["outputs"][0]["data"]).reshape(n, -1))
            t += n
        wrong = c.post(INFER, json=_body(x[:1], seq, 3))
        assert wrong.status_code == 409 and wrong.json()["current_step"] == t, wrong.text
        assert "at step 8" in wrong.json()["error"]
    offline.assert_outputs_close(np.concatenate(got), offline.run(x)[0])


def _inputs(x: np.ndarray) -> list[grpcclient.InferInput]:
    i = grpcclient.InferInput("x", [1, *x.shape], "FP32")
    i.set_data_from_numpy(x[None].astype(np.float32))
    return [i]


def _params(seq: str, t: int) -> dict:
    return {"expected_step": t}


def test_grpc_unary_retries_are_answered_from_the_stored_reply(store_server: Server, offline: Offline):
    x = random_steps(np.random.default_rng(12), sum(CHUNKS))
    seq = f"unary-{time.monotonic_ns()}"
    got, t = [], 0
    client = grpcclient.InferenceServerClient(store_server.grpc)
    try:
        for n in CHUNKS:
            replies = [
                client.infer(
                    "demand", _inputs(x[t : t + n]), sequence_id=seq, sequence_start=t == 0, parameters=_params(seq, t)
                )
                for _ in range(2)
            ]
            a, b = (r.as_numpy("y") for r in replies)
            np.testing.assert_array_equal(a, b)
            params = [r.get_response().parameters for r in replies]
            assert params[0]["step"].int64_param == params[1]["step"].int64_param == t + n
            assert params[1]["replayed"].bool_param == (t > 0)
            got.append(a[0])
            t += n
        with pytest.raises(InferenceServerException) as e:
            client.infer("demand", _inputs(x[:1]), sequence_id=seq, parameters=_params(seq, 2))
        assert e.value.status() == "StatusCode.FAILED_PRECONDITION" and "at step 8" in e.value.message()
    finally:
        client.close()
    offline.assert_outputs_close(np.concatenate(got), offline.run(x)[0])


def test_grpc_stream_retries_are_answered_from_the_stored_reply(store_server: Server, offline: Offline):
    x = random_steps(np.random.default_rng(13), sum(CHUNKS))
    seq = f"stream-{time.monotonic_ns()}"
    client = grpcclient.InferenceServerClient(store_server.grpc)
    q: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        got, t = [], 0
        for n in CHUNKS:
            for _ in range(2):
                client.async_stream_infer(
                    "demand", _inputs(x[t : t + n]), sequence_id=seq, sequence_start=t == 0, parameters=_params(seq, t)
                )
            (a, ea), (b, eb) = q.get(timeout=30), q.get(timeout=30)
            assert ea is None and eb is None, (ea, eb)
            np.testing.assert_array_equal(a.as_numpy("y"), b.as_numpy("y"))
            assert b.get_response().parameters["step"].int64_param == t + n
            got.append(a.as_numpy("y")[0])
            t += n
        client.async_stream_infer("demand", _inputs(x[:1]), sequence_id=seq, parameters=_params(seq, 5))
        result, error = q.get(timeout=30)
        assert result is None and "at step 8" in error.message(), error
    finally:
        client.stop_stream()
        client.close()
    offline.assert_outputs_close(np.concatenate(got), offline.run(x)[0])


async def test_a_step_behind_a_slow_one_answers_504_at_its_deadline_and_changes_nothing():
    """The deadline counts from the request's arrival: the wait behind the session's earlier
    step (here: one that holds the session for longer than the deadline) is part of it."""
    timeout = 0.3
    settings = Settings(model_repository=DEFAULT_MODEL.parent.parent, request_timeout_s=timeout)
    metrics = Metrics()
    dp = DataPlane(settings, make_store(settings, metrics), metrics)
    app = create_app(settings, dp)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")
    async with app.router.lifespan_context(app), client as c:
        sid = (await c.post("/v1/sessions", json={"model": "demand"})).json()["session_id"]
        x = random_steps(np.random.default_rng(14), 1).tolist()
        assert (await c.post(f"/v1/sessions/{sid}/step", json={"inputs": x})).status_code == 200
        before = (await c.get(f"/v1/sessions/{sid}/snapshot")).json()
        entered, release = hold_next_batch(dp)
        holder = asyncio.create_task(c.post(f"/v1/sessions/{sid}/step", json={"inputs": x}))
        await asyncio.wait_for(entered.wait(), 5)
        t0 = time.monotonic()
        r = await c.post(f"/v1/sessions/{sid}/step", json={"inputs": x})
        took = time.monotonic() - t0
        release.set()
        assert (await holder).status_code == 504  # the slow step itself outlived its deadline
        assert r.status_code == 504 and "unchanged" in r.json()["error"], r.text
        assert timeout <= took < timeout + 0.25, took
        assert (await c.get(f"/v1/sessions/{sid}/snapshot")).json() == before


async def test_a_sequence_start_that_misses_its_deadline_resets_nothing(offline: Offline):
    """A start resets the sequence with its step, in the batch that runs it: a start that times
    out (504) leaves the sequence where it was, and the next step continues from there."""
    settings = Settings(model_repository=DEFAULT_MODEL.parent.parent, request_timeout_s=0.3)
    metrics = Metrics()
    dp = DataPlane(settings, make_store(settings, metrics), metrics)
    app = create_app(settings, dp)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")
    xs = random_steps(np.random.default_rng(15), 3)

    def body(k: int, **params: object) -> dict:
        data = xs[k : k + 1]
        return {
            "inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": data.ravel().tolist()}],
            "parameters": {"sequence_id": 7, **params},
        }

    async with app.router.lifespan_context(app), client as c:
        assert (await c.post(INFER, json=body(0, sequence_start=True))).json()["parameters"]["step"] == 1
        assert (await c.post(INFER, json=body(1))).json()["parameters"]["step"] == 2
        entered, release = hold_next_batch(dp)
        restart = asyncio.create_task(c.post(INFER, json=body(0, sequence_start=True)))
        await asyncio.wait_for(entered.wait(), 5)
        r = await asyncio.wait_for(restart, 5)  # answered at its deadline, its batch still held
        release.set()
        assert r.status_code == 504 and "unchanged" in r.json()["error"], r.text
        assert await dp.worker("demand").batcher.drain(5)  # the held batch ends, and writes nothing
        r = await c.post(INFER, json=body(2))
        assert r.status_code == 200 and r.json()["parameters"]["step"] == 3, r.text
        offline.assert_outputs_close(r.json()["outputs"][0]["data"], offline.run(xs)[0][2])


async def test_a_store_failure_on_a_sequence_start_or_end_fails_that_request_alone():
    """Starts create and ends delete one by one in the batch handler, after the batch's
    other writes: a store that fails there fails that request only (a new sequence not
    created: 503), never the batch's other steps, which are stored; an end whose release
    failed has its step stored, and its retry (answered from the stored reply) releases it."""
    settings = Settings(model_repository=DEFAULT_MODEL.parent.parent)
    metrics = Metrics()
    store = make_store(settings, metrics)
    dp = DataPlane(settings, store, metrics)
    dp.load_models()
    await dp.start()
    x = random_steps(np.random.default_rng(16), 1)
    create, delete = store.create, store.delete

    async def failing_create(rec, *args):
        if rec.id == dp.sessions.sequence_session_id(dp.worker("demand"), 2):
            raise ConnectionError("connection reset")
        return await create(rec, *args)

    async def failing_delete(*args):
        raise ConnectionError("connection reset")

    try:
        store.create = failing_create
        sid = (await dp.sessions.create("demand")).id
        results = await asyncio.gather(
            dp.sessions.sequence_step("demand", None, 1, x, start=True),
            dp.sessions.sequence_step("demand", None, 2, x, start=True),
            dp.sessions.step(sid, x),
            return_exceptions=True,
        )
        assert [type(r).__name__ for r in results] == ["tuple", "StoreUnavailable", "StepResult"], results
        assert results[0][1].step == 1 and results[2].step == 1
        with pytest.raises(InvalidInput, match="not active"):  # never created
            await dp.sessions.sequence_step("demand", None, 2, x)
        store.create = create

        store.delete = failing_delete
        _, last = await dp.sessions.sequence_step("demand", None, 1, x, end=True, expected_step=1)
        assert last.step == 2 and not last.replayed  # stored, though not released
        store.delete = delete
        _, again = await dp.sessions.sequence_step("demand", None, 1, x, end=True, expected_step=1)
        assert again.replayed and again.step == 2
        with pytest.raises(InvalidInput, match="not active"):  # released by the retry
            await dp.sessions.sequence_step("demand", None, 1, x)
    finally:
        await dp.drain(5)
        await dp.stop()
