"""The one rule for running a stream's queued steps together (service/core/coalesce.py), which
WebSocket frames and ModelStreamInfer messages follow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from harness.paths import DEFAULT_MODEL
from service.api.grpc.protos import service_pb2 as pb
from service.api.grpc.servicer import Servicer
from service.api.grpc.streaming import StreamCall
from service.core.coalesce import Part, Run, plain
from service.metrics import Metrics, collected
from service.runtime.repository import read_card
from tests.service.conftest import Offline, data_plane, hold_next_batch, random_steps


def rows(n: int, f: int = 3) -> np.ndarray:
    return np.arange(n * f, dtype=np.float32).reshape(n, f)


def test_a_run_takes_steps_in_order_within_the_limit_and_splits_outputs_and_steps() -> None:
    run = Run(max_steps=6)
    assert run.add(Part(rows(2), start=True))
    assert run.add(Part(rows(3)))
    assert not run.add(Part(rows(2)))  # 7 readings: over the limit, it starts the next run
    assert not run.add(Part(rows(1), start=True))  # a start only opens a run
    assert not run.add(Part(rows(1, f=4)))  # another width
    assert run.add(Part(rows(1), end=True))
    assert not run.add(Part(rows(1)))  # the sequence ended
    assert run.x.shape == (6, 3) and run.steps == 6
    y = np.arange(6, dtype=np.float32)[:, None]
    parts = run.split(y, step=16)  # the session is at step 16 after the run
    assert [step for _, step in parts] == [12, 15, 16]
    assert [out[:, 0].tolist() for out, _ in parts] == [[0, 1], [2, 3, 4], [5]]


def test_a_first_request_longer_than_the_limit_still_opens_its_run() -> None:
    run = Run(max_steps=2)
    assert run.add(Part(rows(5)))  # alone it is refused by the data plane with its own message
    assert not run.add(Part(rows(1)))


def test_plain_steps_are_those_the_card_accepts_alone() -> None:
    card = read_card(DEFAULT_MODEL)
    ok = np.asarray([[30500.0, 8.0, 2.0], [30600.0, 8.5, 2.0]], np.float32)
    assert plain(card, ok, 100)
    off_grid = ok.copy()
    off_grid[1, 1] = 8.25
    assert not plain(card, off_grid, 100)
    assert not plain(card, ok, 1)  # more readings than a request may carry
    assert not plain(card, ok[:, :2], 100)


async def test_a_streams_queued_requests_run_together_and_a_refused_one_fails_alone(offline: Offline) -> None:
    """``ModelStreamInfer`` (in process: the stream's call fed parsed messages): while the first
    request's batch is held, the other 40 of its sequence are read and queue behind it; then
    they run as a few longer steps, not one batch each, the one the card refuses (an hour off
    the half-hour grid) is answered alone with its error, and every other reply is exact."""
    x = random_steps(np.random.default_rng(8), 41)
    bad = x[:1].copy()
    bad[0, 1] += 0.25

    def request(x: np.ndarray, rid: str, start: bool = False) -> pb.ModelInferRequest:
        r = pb.ModelInferRequest(model_name="demand", id=rid)
        r.inputs.add(name="x", datatype="FP32", shape=[1, *x.shape])
        r.raw_input_contents.append(np.ascontiguousarray(x, "<f4").tobytes())
        r.outputs.add(name="y")
        r.parameters["sequence_id"].int64_param = 78
        if start:
            r.parameters["sequence_start"].bool_param = True
        return r

    metrics = Metrics()
    async with data_plane(metrics=metrics) as dp:
        entered, release = hold_next_batch(dp)

        async def requests() -> AsyncIterator[pb.ModelInferRequest]:
            yield request(x[:1], "0", start=True)
            await asyncio.wait_for(entered.wait(), 10)  # the first request's batch has begun
            for t in range(1, 41):
                yield request(x[t : t + 1], str(t))
                if t == 20:
                    yield request(bad, "bad")
            release.set()  # every request has been read: the reader asked for the next one

        batches = collected(metrics.registry)["lstm_batch_size"].samples
        before = next(s.value for s in batches if s.name == "lstm_batch_size_count")
        call = StreamCall(Servicer(dp, None, False, 64), None, 64)
        got = [r async for r in call.run(requests())]
        batches = collected(metrics.registry)["lstm_batch_size"].samples
        after = next(s.value for s in batches if s.name == "lstm_batch_size_count")
    errors = [r for r in got if r.error_message]
    assert len(errors) == 1 and "grid" in errors[0].error_message and errors[0].infer_response.id == "bad"
    replies = [r.infer_response for r in got if not r.error_message]
    assert [r.id for r in replies] == [str(t) for t in range(41)]
    assert [r.parameters["step"].int64_param for r in replies] == list(range(1, 42))
    ys = [np.frombuffer(r.raw_output_contents[0], "<f4") for r in replies]
    offline.assert_outputs_close(np.concatenate(ys), offline.run(x)[0][:, 0])  # the refused one changed nothing
    assert after - before <= 4, f"{after - before} batches for 41 queued requests: they did not run together"
