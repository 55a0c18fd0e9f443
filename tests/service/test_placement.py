"""Where a batch's onnxruntime call runs (``ModelWorker.loop_limit``): on the event loop when
the loop had been quiet and the call is short; in the worker pool when the batch's requests
waited while the loop was busy -- run on the loop, such a batch would keep the requests
arriving meanwhile from being read (gRPC hands the loop one new call per turn), and every
batch after it would be as small."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from harness.paths import DEFAULT_MODEL
from service.config import Settings
from tests.service.conftest import Offline, data_plane, random_steps

SLOW_CALL_S = 0.2  # the first call holds the loop this long; the second request arrives meanwhile


async def test_a_batch_that_waited_while_a_call_held_the_loop_runs_in_the_pool(offline: Offline) -> None:
    # every call fits on the loop by its estimate: only the rule under test sends one to the pool
    settings = Settings(model_repository=DEFAULT_MODEL.parent.parent, inline_compute_us=1e6)
    async with data_plane(settings) as dp:
        w = dp.worker("demand")
        loop, loop_thread = asyncio.get_running_loop(), threading.current_thread()
        x = random_steps(np.random.default_rng(7), 2)
        on_loop: list[bool] = []
        run = w.model.run
        second: list[asyncio.Future] = []

        def step(seq: int, t: int) -> asyncio.Future:
            return asyncio.ensure_future(dp.sessions.sequence_step("demand", None, seq, x[t : t + 1], start=t == 0))

        def traced(*args: object) -> tuple[np.ndarray, np.ndarray]:
            on_loop.append(threading.current_thread() is loop_thread)
            if len(on_loop) == 1:
                # a request comes in while this call holds the loop: the loop takes it after the call
                loop.call_soon(lambda: second.append(step(2, 0)))
                time.sleep(SLOW_CALL_S)
            return run(*args)  # type: ignore[arg-type]

        w.model.run = traced  # type: ignore[method-assign]
        _, first = await step(1, 0)  # the loop was quiet: the call runs on it
        _, res = await second[0]
        assert on_loop == [True, False]
        assert w._last_call < SLOW_CALL_S  # the pool's call, not the slow one

        # the rule itself: quiet for as long as the last call took, or not
        assert w.loop_limit(w._free_since + 2 * w._last_call) == w.inline_s
        assert w.loop_limit(w._free_since + w._last_call / 2) == 0.0

        want = offline.run(x[:1])[0]
        for got in (first.outputs, res.outputs):  # the same reply wherever the call ran
            offline.assert_outputs_close(got[:, 0], want[:, 0])
