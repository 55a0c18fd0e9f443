"""Overload: open-loop arrivals at a multiple of measured capacity; the service must shed
(503 + Retry-After, fast), keep admitted latency under the deadline, keep memory bounded,
and recover at once. ``python -m bench.overload [--seconds 60] [--factor 3]``.

Work: stateless predicts of 64 steps on the hidden-512 model (compute-bound, so the load
generator can outrun the server on the same machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np
import orjson

from bench.loadgen import Conn, reading
from bench.run import ensure_big_model
from bench.servers import serve

STEPS = 64


async def closed_loop_capacity(url: str, seconds: float) -> float:
    host, port = url.split("//")[1].split(":")
    body = orjson.dumps({"inputs": [[reading(t) for t in range(STEPS)]]})
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        c = Conn(host, int(port))
        await c.open()
        while time.perf_counter() < stop:
            st, _, _ = await c.request("POST", "/v1/models/demand512/predict", body)
            done += st == 200
        c.close()

    await asyncio.gather(*(worker() for _ in range(16)))
    return done / seconds


def pct(a: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(a) * 1000, q)) if a else None


async def open_loop(url: str, rate: float, seconds: float, sample, pool_size: int = 256) -> dict:
    host, port = url.split("//")[1].split(":")
    body = orjson.dumps({"inputs": [[reading(t) for t in range(STEPS)]]})
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(pool_size):
        c = Conn(host, int(port))
        await c.open()
        pool.put_nowait(c)
    ok_lat, shed_lat, other = [], [], {}
    memory = []
    t0 = time.perf_counter()

    async def one(at: float) -> None:
        c = await pool.get()
        try:
            st, hdrs, _ = await c.request("POST", "/v1/models/demand512/predict", body)
        finally:
            pool.put_nowait(c)
        dt = time.perf_counter() - at
        if st == 200:
            ok_lat.append(dt)
        elif st == 503 and "retry-after" in hdrs:
            shed_lat.append(dt)
        else:
            other[str(st)] = other.get(str(st), 0) + 1

    tasks = []
    n = int(rate * seconds)
    next_sample = 0.0
    for i in range(n):
        at = t0 + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(at)))
        if at - t0 >= next_sample:
            memory.append((round(at - t0, 1), sample()))
            next_sample += 1.0
    await asyncio.gather(*tasks)
    return {
        "offered_per_s": rate,
        "seconds": seconds,
        "sent": n,
        "admitted": len(ok_lat),
        "shed": len(shed_lat),
        "other": other,
        "admitted_p50_ms": pct(ok_lat, 50),
        "admitted_p99_ms": pct(ok_lat, 99),
        "shed_p50_ms": pct(shed_lat, 50),
        "shed_p99_ms": pct(shed_lat, 99),
        "rss_mb": memory,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--factor", type=float, default=3.0)
    p.add_argument("--out", type=Path, default=Path("docs/bench/overload.json"))
    a = p.parse_args()
    env = {"LSTM_MAX_QUEUE_SIZE": "32", "LSTM_REQUEST_TIMEOUT_S": "2", "LSTM_INFERENCE_WORKERS": "1"}
    with serve("service", ensure_big_model(), env) as server:
        sample = lambda: round(server.peak_rss_bytes() / 2**20, 1)  # noqa: E731
        cap = asyncio.run(closed_loop_capacity(server.url, 5))
        over = asyncio.run(open_loop(server.url, cap * a.factor, a.seconds, sample))
        after = asyncio.run(open_loop(server.url, cap * 0.5, 5, sample))
    result = {"capacity_per_s": cap, "overload": over, "recovery_at_half_capacity": after, "deadline_ms": 2000}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    json.dump({k: v for k, v in result.items()}, sys.stdout, default=str)
    print()


if __name__ == "__main__":
    main()
