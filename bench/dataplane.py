"""The Python cost of a sequence step without HTTP, sockets or onnxruntime: in one process,
32 streams of single-reading steps (``--streams``: 1 makes every batch one request, as at
concurrency 1), onnxruntime's call replaced by one that returns its
inputs' state (every other line runs as served), CPU time per step.

``python -m bench.dataplane`` prints, medians of interleaved rounds:

- the data plane: ``dp.sessions.sequence_step`` (checks, the batcher, the batch handler's
  read -> run -> commit, the memory store, metrics);
- the v2 endpoint: the hot route's function (decode, ``run_infer``, the data plane, encode);
- the lean prototype's step path (``bench/layer_server.py``'s engine) with the same checks.

Unlike ``make bench-layers`` this is quiet enough on a shared machine to compare two
versions of the code a few percent apart; the server under load multiplies these figures
(its caches are shared with the load generator and the kernel's network path).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
import uvloop

from bench.layer_server import Engine
from bench.servers import DEFAULT_MODEL_DIR
from service.api.http import v2
from service.api.http.hot import HotRequest
from service.app import make_store
from service.config import Settings
from service.core import inputs
from service.core.dataplane import DataPlane
from service.metrics import Metrics
from service.sessions.record import digest

STREAMS = 32
READING = [30123.5, 8.5, 2.0]
HEADERS = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
Step = Callable[[int, bool], Awaitable[Any]]


def steps(dp: DataPlane, streams: int = STREAMS) -> dict[str, Step]:
    """One step of sequence ``seq`` (``start``: its first) by each path measured."""
    x = np.array([READING], np.float32)
    w = dp.worker(DEFAULT_MODEL_DIR.parent.name)
    name, card, limit = w.card.name, w.card, dp.settings.max_steps_per_request
    engine = Engine(w, inline=True)

    async def data_plane(seq: int, start: bool) -> Any:
        return await dp.sessions.sequence_step(name, None, seq, x, start=start)

    bodies = {
        start: [
            orjson.dumps(
                {
                    "inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": READING}],
                    "parameters": {"sequence_id": seq, "sequence_start": start},
                }
            )
            for seq in range(streams + 1)
        ]
        for start in (False, True)
    }

    async def endpoint(seq: int, start: bool) -> Any:
        return await v2.infer(HotRequest(dp, {"model": name}, b"", HEADERS, bodies[start][seq], None), name, None)

    async def lean(seq: int, start: bool) -> Any:
        deadline = time.monotonic() + dp.settings.request_timeout_s
        dp.gate.check()
        inputs.check_steps(card, x, "input x", limit)
        s = engine.sequence(dp.sessions.sequence_session_id(w, seq, None), None, start)
        assert s is not None
        return await engine.submit(s, x[0:1], None, digest(x), deadline)

    return {"data plane": data_plane, "v2 endpoint": endpoint, "lean prototype's step path": lean}


async def per_step(step: Step, n: int, streams: int = STREAMS) -> float:
    """CPU µs per step over ``streams`` concurrent sequences of ``n`` steps each."""

    async def stream(seq: int) -> None:
        await step(seq, True)
        for _ in range(n - 1):
            await step(seq, False)

    t0 = time.process_time()
    await asyncio.gather(*(stream(seq) for seq in range(1, streams + 1)))
    return 1e6 * (time.process_time() - t0) / (streams * n)


async def run(n: int, rounds: int, streams: int = STREAMS) -> dict[str, float]:
    # past every batch: with no gRPC request in progress, every batch runs on the loop
    settings = Settings(model_repository=DEFAULT_MODEL_DIR.parent.parent, inline_compute_us=1e9)
    metrics = Metrics()
    dp = DataPlane(settings, make_store(settings, metrics), metrics)
    dp.load_models()
    await dp.start()
    w = dp.worker(DEFAULT_MODEL_DIR.parent.name)
    y = np.zeros((settings.max_batch_size, 1, w.card.n_outputs), np.float32)
    w.model.run = lambda x, state, lengths=None: (y[: x.shape[0], : x.shape[1]], state.copy())  # type: ignore[method-assign]
    paths = steps(dp, streams)
    for step in paths.values():  # warm-up
        await per_step(step, 20, streams)
    runs: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, step in paths.items():
            runs[name].append(await per_step(step, n, streams))
    await dp.drain(5)
    await dp.stop()
    return {name: statistics.median(r) for name, r in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="steps per stream and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--streams", type=int, default=STREAMS, help="concurrent streams (1: batches of one request)")
    a = ap.parse_args()
    result = uvloop.run(run(a.steps, a.rounds, a.streams))
    print(f"{a.streams} streams x {a.steps} steps, median of {a.rounds} rounds, onnxruntime's call a no-op\n")
    print("| path | CPU µs per step |\n|---|---:|")
    for name, us in result.items():
        print(f"| {name} | {us:.1f} |")


if __name__ == "__main__":
    main()
