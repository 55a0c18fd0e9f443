"""Step throughput with the Redis store under each append-only fsync policy.

``python -m bench.redis_fsync [--seconds 8] [--streams 1,32] [--rounds 2] [--dir DIR]``

For each policy (no persistence, ``appendfsync everysec``, ``appendfsync always``) a real
redis-server runs on a fresh directory under ``--dir`` (it must be on the disk the numbers
are meant for: a tmpfs makes fsync free), with the other flags of ``k8s/base/redis.yaml``; one
service process uses it. Closed-loop clients each stream one session, one time step per
request, for ``--seconds``. Policies alternate within each round, so slow drifts of a shared
machine hit all of them alike. Writes the JSON to ``docs/bench/redis_fsync.json`` and the
measured section of ``docs/deployment.md`` ("Redis durability"), tables and comparisons computed
from the run; ``--render`` rewrites the section from the saved JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from bench.loadgen import Conn, reading
from bench.run import put_section
from bench.servers import DEFAULT_MODEL_DIR, ROOT, serve
from bench.state_file import records
from harness.procs import free_port
from harness.redis import RedisServer, manifest_args, require_redis


def session_bytes() -> int:
    """The size of one stored session of the default model, as the Redis store writes it: its
    record (state, ids, times) and its last one-step reply."""
    from service.sessions import codec

    return len(codec.encode(records(1)[0]))


POLICIES = {
    "none": ["--appendonly", "no"],
    "everysec": manifest_args("everysec"),
    "always": manifest_args("always"),
}


async def closed_loop(url: str, streams: int, seconds: float) -> dict:
    host, port = url.split("//")[1].split(":")
    lat: list[float] = []
    stop = 0.0

    async def worker(k: int) -> None:
        c = Conn(host, int(port))
        await c.open()
        _, _, body = await c.request("POST", "/v1/sessions", orjson.dumps({"model": "demand"}))
        sid = orjson.loads(body)["session_id"]
        t = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            st, _, _ = await c.request("POST", f"/v1/sessions/{sid}/step", orjson.dumps({"inputs": [reading(t + k)]}))
            assert st == 200, st
            lat.append(time.perf_counter() - t0)
            t += 1
        c.close()

    stop = time.perf_counter() + seconds
    await asyncio.gather(*(worker(k) for k in range(streams)))
    a = np.asarray(lat) * 1000
    return {
        "steps_per_s": len(lat) / seconds,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
    }


def redis_alone(policy: str, clients: int, base: Path) -> float:
    """SETs per second of one session-sized value (``session_bytes()``) with redis-benchmark: Redis and
    the disk alone, without the service in front."""
    with tempfile.TemporaryDirectory(dir=base) as d:
        redis = RedisServer(free_port(), Path(d), POLICIES[policy])
        redis.start()
        try:
            out = subprocess.run(
                [
                    "redis-benchmark",
                    "-p",
                    str(redis.port),
                    "-t",
                    "set",
                    "-n",
                    "20000",
                    "-c",
                    str(clients),
                    "-d",
                    str(session_bytes()),
                    "-q",
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            ).stdout
            return float(re.search(r"SET: ([0-9.]+) requests per second", out.replace("\r", "\n")).group(1))  # type: ignore[union-attr]
        finally:
            redis.stop()


def run_one(policy: str, streams: int, seconds: float, base: Path) -> dict:
    with tempfile.TemporaryDirectory(dir=base) as d:
        redis = RedisServer(free_port(), Path(d), POLICIES[policy])
        redis.start()
        try:
            env = {"LSTM_SESSION_STORE": "redis", "LSTM_REDIS_URL": redis.url}
            with serve("service", DEFAULT_MODEL_DIR, env) as s:
                asyncio.run(closed_loop(s.url, streams, 1.0))  # warm-up
                return asyncio.run(closed_loop(s.url, streams, seconds))
        finally:
            redis.stop()


BEGIN, END = "<!-- redis-fsync:begin -->", "<!-- redis-fsync:end -->"
NAMES = {"none": "no persistence", "everysec": "`everysec`", "always": "`always`"}


def section(data: dict) -> list[str]:
    """The measured part of deployment.md's "Redis durability", from a run's JSON."""
    alone = {
        pol: {int(n): statistics.median(xs) for n, xs in by_n.items()} for pol, by_n in data["redis_alone"].items()
    }
    svc = {
        pol: {int(n): {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in by_n.items()}
        for pol, by_n in data["service"].items()
    }
    pols = list(NAMES)
    size = data.get("value_bytes")
    runs = len(next(iter(next(iter(data["service"].values())).values())))
    lines = [
        BEGIN,
        f"Medians of {runs} interleaved run(s) per point (`docs/bench/redis_fsync.json`), this run:",
        "",
        f"| Redis alone (`redis-benchmark`, SET of {size:,} B, one session record) | "
        + " | ".join(NAMES[p] for p in pols)
        + " |",
        "|---|" + "---:|" * len(pols),
    ]
    for n in sorted(alone["none"]):
        lines.append(f"| {n} client(s), SET/s | " + " | ".join(f"{alone[p][n]:,.0f}" for p in pols) + " |")
    lines += [
        "",
        "| Through the service (closed loop, one session per client, 1 step per request) | "
        + " | ".join(NAMES[p] for p in pols)
        + " |",
        "|---|" + "---:|" * len(pols),
    ]
    for n in sorted(svc["none"]):
        lines.append(
            f"| {n} stream(s): steps/s | " + " | ".join(f"{svc[p][n]['steps_per_s']:,.0f}" for p in pols) + " |"
        )
        lines.append(
            f"| {n} stream(s): p50 / p99 latency, ms | "
            + " | ".join(f"{svc[p][n]['p50_ms']:.1f} / {svc[p][n]['p99_ms']:.1f}" for p in pols)
            + " |"
        )
    one, many = min(svc["none"]), max(svc["none"])
    c1, cn = min(alone["none"]), max(alone["none"])
    lines += [
        "",
        f"From this run: Redis alone with `always` wrote {alone['always'][c1] / alone['everysec'][c1]:.2f}× the SETs of "
        f"`everysec` with {c1} client and {alone['always'][cn] / alone['everysec'][cn]:.2f}× with {cn}; through the "
        f"service, one stream ran at {svc['always'][one]['steps_per_s'] / svc['everysec'][one]['steps_per_s']:.2f}× "
        f"`everysec`'s rate with `always` ({svc['always'][one]['p50_ms'] - svc['everysec'][one]['p50_ms']:+.1f} ms at "
        f"p50) and {many} streams at {svc['always'][many]['steps_per_s'] / svc['everysec'][many]['steps_per_s']:.2f}×; "
        f"`everysec` against no persistence: {svc['everysec'][one]['steps_per_s'] / svc['none'][one]['steps_per_s']:.2f}× "
        f"(1 stream) and {svc['everysec'][many]['steps_per_s'] / svc['none'][many]['steps_per_s']:.2f}× ({many}).",
        END,
    ]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--streams", default="1,16")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    p.add_argument("--render", action="store_true", help="write the section from the saved JSON, running nothing")
    args = p.parse_args()
    saved = args.out / "bench" / "redis_fsync.json"
    if args.render:
        put_section(args.out / "deployment.md", BEGIN, END, "\n".join(section(json.loads(saved.read_text()))))
        return
    require_redis()
    results: dict[str, dict[int, list[dict]]] = {pol: {} for pol in POLICIES}
    alone: dict[str, dict[int, list[float]]] = {pol: {} for pol in POLICIES}
    for _ in range(args.rounds):
        for n in (1, 16):
            for pol in POLICIES:
                alone[pol].setdefault(n, []).append(redis_alone(pol, n, args.dir))
                print(f"redis-benchmark {pol:9s} clients={n:3d} {alone[pol][n][-1]:8.0f} SET/s")
        for n in (int(x) for x in args.streams.split(",")):
            for pol in POLICIES:
                r = run_one(pol, n, args.seconds, args.dir)
                results[pol].setdefault(n, []).append(r)
                print(
                    f"{pol:9s} streams={n:3d} {r['steps_per_s']:8.0f} steps/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
                )
    data = {"value_bytes": session_bytes(), "service": results, "redis_alone": alone}
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(data, indent=1) + "\n")
    put_section(args.out / "deployment.md", BEGIN, END, "\n".join(section(data)))
    print(f"wrote {saved} and the measured section of {args.out / 'deployment.md'}")


if __name__ == "__main__":
    main()
