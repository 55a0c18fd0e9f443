"""Where a batch's onnxruntime call runs (``ModelWorker.loop_limit``).

While a gRPC request is in progress: on the event loop when the loop had been quiet and the
call is short; in the worker pool when the batch's requests waited while the loop was busy --
run on the loop, such a batch would keep the gRPC requests arriving meanwhile from being read
(grpc.aio hands the loop one new call per turn), and every batch after it would be as small.

While none is (HTTP and WebSocket load): on the loop, loaded or not, as far as the batch's
calls are estimated under ``http_inline_compute_us`` together (uvloop reads every ready
connection in one turn); the rest of the batch in the pool."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest

from harness.paths import DEFAULT_MODEL
from service.api.grpc.protos import service_pb2 as pb
from service.api.grpc.servicer import Servicer
from service.api.grpc.streaming import StreamCall
from service.batching import collate
from service.config import Settings
from service.core.dataplane import DataPlane
from service.core.model_worker import ModelWorker
from service.errors import ModelNotFound
from tests.service.conftest import Offline, data_plane, hold_next_batch, random_steps

SLOW_CALL_S = 0.2  # the first call holds the loop this long; the second request arrives meanwhile
REPO = DEFAULT_MODEL.parent.parent

Step = Callable[[int, np.ndarray, bool], Awaitable[np.ndarray]]  # (sequence, x [1, F], start) -> y, flat


def grpc_step(dp: DataPlane, rpc: str) -> Step:
    """A sequence step through the gRPC service (in process: a parsed message), as a unary
    ``ModelInfer`` or as a ``ModelStreamInfer`` stream's one message."""
    servicer = Servicer(dp, None, False, 64)

    async def step(seq: int, x: np.ndarray, start: bool) -> np.ndarray:
        r = pb.ModelInferRequest(model_name="demand")
        r.inputs.add(name="x", datatype="FP32", shape=[1, *x.shape])
        r.raw_input_contents.append(np.ascontiguousarray(x, "<f4").tobytes())
        r.parameters["sequence_id"].int64_param = seq
        r.parameters["sequence_start"].bool_param = start
        if rpc == "ModelInfer":
            reply = await servicer.infer(r, None)
        else:

            async def one() -> AsyncIterator[pb.ModelInferRequest]:
                yield r

            (got,) = [m async for m in StreamCall(servicer, None, 64).run(one())]
            assert not got.error_message, got.error_message
            reply = got.infer_response
        return np.frombuffer(reply.raw_output_contents[0], "<f4")

    return step


def data_plane_step(dp: DataPlane) -> Step:
    """A sequence step as HTTP's routes and WebSocket frames take it: straight to the data plane."""

    async def step(seq: int, x: np.ndarray, start: bool) -> np.ndarray:
        _, res = await dp.sessions.sequence_step("demand", None, seq, x, start=start)
        return res.outputs.ravel()

    return step


async def two_steps_one_while_a_call_holds_the_loop(
    dp: DataPlane, step: Step, x: np.ndarray
) -> tuple[list[bool], list[np.ndarray]]:
    """The first sequence's step runs a call that holds the loop for ``SLOW_CALL_S``; the second
    sequence's step comes in meanwhile, so its batch waited while the loop was busy. Returns
    where each call ran (True: on the loop) and the two replies."""
    w = dp.worker("demand")
    loop, loop_thread = asyncio.get_running_loop(), threading.current_thread()
    on_loop: list[bool] = []
    run = w.model.run
    second: list[asyncio.Future] = []

    def traced(*args: object) -> tuple[np.ndarray, np.ndarray]:
        on_loop.append(threading.current_thread() is loop_thread)
        if len(on_loop) == 1:
            loop.call_soon(lambda: second.append(asyncio.ensure_future(step(2, x, True))))
            time.sleep(SLOW_CALL_S)
        return run(*args)  # type: ignore[arg-type]

    w.model.run = traced  # type: ignore[method-assign]
    try:
        first = await step(1, x, True)  # the loop was quiet: the call runs on it
        res = await second[0]
    finally:
        w.model.run = run  # type: ignore[method-assign]
    return on_loop, [first, res]


@pytest.mark.parametrize("rpc", ["ModelInfer", "ModelStreamInfer"])
async def test_with_grpc_in_progress_a_batch_that_waited_while_a_call_held_the_loop_runs_in_the_pool(
    offline: Offline, rpc: str
) -> None:
    # every call fits on the loop by its estimate: only the rule under test sends one to the pool
    async with data_plane(Settings(model_repository=REPO, inline_compute_us=1e6)) as dp:
        w = dp.worker("demand")
        x = random_steps(np.random.default_rng(7), 1)
        on_loop, outs = await two_steps_one_while_a_call_holds_the_loop(dp, grpc_step(dp, rpc), x)
        assert on_loop == [True, False]
        assert w._last_call < SLOW_CALL_S  # the pool's call, not the slow one
        assert dp.grpc_load.requests == 0  # both counted while they ran, and no longer

        # the rule itself, while a gRPC request is in progress: quiet for as long as the last call took, or not
        dp.grpc_load.requests = 1
        assert w.loop_limit(w._free_since + 2 * w._last_call) == w.inline_s
        assert w.loop_limit(w._free_since + w._last_call / 2) == 0.0
        dp.grpc_load.requests = 0
        assert w.loop_limit(w._free_since + w._last_call / 2) == w.http_inline_s

        want = offline.run(x)[0].ravel()
        for got in outs:  # the same reply wherever the call ran
            offline.assert_outputs_close(got, want)


async def test_without_grpc_a_batch_that_waited_while_a_call_held_the_loop_runs_on_the_loop(
    offline: Offline,
) -> None:
    async with data_plane(Settings(model_repository=REPO)) as dp:
        x = random_steps(np.random.default_rng(7), 1)
        on_loop, outs = await two_steps_one_while_a_call_holds_the_loop(dp, data_plane_step(dp), x)
        assert on_loop == [True, True]
        want = offline.run(x)[0].ravel()
        for got in outs:
            offline.assert_outputs_close(got, want)


def traced_calls(w: ModelWorker) -> list[bool]:
    """Where each of ``w``'s onnxruntime calls runs from now on (True: on the event loop)."""
    loop_thread, run, on_loop = threading.current_thread(), w.model.run, []

    def traced(*args: object) -> tuple[np.ndarray, np.ndarray]:
        on_loop.append(threading.current_thread() is loop_thread)
        return run(*args)  # type: ignore[arg-type]

    w.model.run = traced  # type: ignore[method-assign]
    return on_loop


def steps_for(w: ModelWorker, rows: int, low: float, high: float) -> int:
    """A length whose call on ``rows`` rows is estimated between ``low`` and ``high``
    seconds (the warm-up's figures are this machine's)."""
    steps = next((t for t in range(1, 4097) if w.model.estimate_s(rows, t) > low), 4096)
    assert low < w.model.estimate_s(rows, steps) <= high, (rows, steps, low, high)
    return steps


async def test_a_call_estimated_past_the_http_bound_runs_in_the_pool(offline: Offline) -> None:
    async with data_plane(Settings(model_repository=REPO)) as dp:
        w = dp.worker("demand")
        on_loop = traced_calls(w)
        rng = np.random.default_rng(9)
        t = steps_for(w, 2, 2 * w.http_inline_s, 8 * w.http_inline_s)
        long = np.stack([random_steps(rng, t) for _ in range(2)])  # 2 sequences past the bound
        _, res = await dp.predict("demand", None, long)
        assert w.model.estimate_s(1, 1) <= w.http_inline_s
        await dp.predict("demand", None, random_steps(rng, 1)[None])
        assert on_loop == [False, True]
        offline.assert_outputs_close(res.y, np.stack([offline.run(s)[0] for s in long]))


async def test_the_bound_holds_for_a_whole_batch_of_several_calls(offline: Offline) -> None:
    """A batch cut by length into calls that each fit under the bound, but not together:
    the first runs on the loop, the next in the pool."""
    async with data_plane(Settings(model_repository=REPO)) as dp:
        w = dp.worker("demand")
        bound = w.http_inline_s
        # the estimate set, as the warm-up would measure it: a row-step costs a hundredth of the
        # bound (measured, one more step of 32 rows could cost more than the window below: on a
        # busy machine it did)
        w.model.call_s, w.model.step_s, w.model.row_step_s = 0.0, 0.0, bound / 100
        on_loop = traced_calls(w)
        rng = np.random.default_rng(10)
        # 32 short rows and one long row: two calls (padding the 32 rows to the long one's
        # length would cost far more), each estimated at 0.55-0.8 of the bound
        t_short = steps_for(w, 32, 0.55 * bound, 0.8 * bound)
        t_long = steps_for(w, 1, 0.55 * bound, 0.8 * bound)
        assert t_long >= 2 * t_short, (t_short, t_long)
        xs = [np.stack([random_steps(rng, t_short) for _ in range(32)]), random_steps(rng, t_long)[None]]
        a, b = [r for _, r in await asyncio.gather(*(dp.predict("demand", None, x) for x in xs))]  # one batch
        assert collate.calls([t_short, t_long], [32, 1], lambda r, t: w.call_cost(r, t, bound)) == [[0], [1]]
        assert on_loop == [True, False]
        offline.assert_outputs_close(a.y, np.stack([offline.run(x)[0] for x in xs[0]]))
        offline.assert_outputs_close(b.y[0], offline.run(xs[1][0])[0])


async def test_a_failed_grpc_request_is_no_longer_counted() -> None:
    async with data_plane() as dp:
        r = pb.ModelInferRequest(model_name="nothing")
        r.inputs.add(name="x", datatype="FP32", shape=[1, 1, 3])
        r.raw_input_contents.append(np.zeros(3, "<f4").tobytes())
        with pytest.raises(ModelNotFound):
            await Servicer(dp, None, False, 64).infer(r, None)
        assert dp.grpc_load.requests == 0


@pytest.mark.parametrize("rpc", ["ModelInfer", "ModelStreamInfer"])
async def test_a_cancelled_grpc_request_is_no_longer_counted(rpc: str) -> None:
    """A client that leaves while its request's batch runs: counted until then, not after."""
    async with data_plane() as dp:
        entered, release = hold_next_batch(dp)
        call = asyncio.ensure_future(grpc_step(dp, rpc)(5, random_steps(np.random.default_rng(4), 1), True))
        await asyncio.wait_for(entered.wait(), 10)
        assert dp.grpc_load.requests == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        release.set()
        assert await dp.worker("demand").batcher.drain(10)
        for _ in range(3):  # the cancelled request's own tasks, if any, finish their turn
            await asyncio.sleep(0)
        assert dp.grpc_load.requests == 0


@pytest.mark.parametrize(
    "overrides",
    [{"http_inline_compute_us": 0}, {"inline_compute_us": 0}, {"inference_workers": 2}],
    ids=["off", "every-batch-in-the-pool", "batches-side-by-side"],
)
async def test_loaded_batches_stay_off_the_loop_when_the_settings_say_so(overrides: dict[str, float]) -> None:
    async with data_plane(Settings(model_repository=REPO, **overrides)) as dp:  # type: ignore[arg-type]
        w = dp.worker("demand")
        assert w.http_inline_s == 0.0
        await dp.predict("demand", None, random_steps(np.random.default_rng(3), 1)[None])
        assert w.loop_limit(w._free_since + w._last_call / 2) == 0.0  # a batch that waited: the pool
