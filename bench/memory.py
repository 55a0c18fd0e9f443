"""Bytes per idle session: RSS growth of a real data plane with the memory store, and
Redis memory per session with the Redis store. ``python -m bench.memory`` writes
``docs/bench/memory.json`` and the sizing table of ``docs/deployment.md`` from it
(``--render``: the table only, from the saved file)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from service.config import Settings
from service.core.dataplane import DataPlane
from service.metrics import Metrics
from service.sessions.memory import MemoryStore
from service.sessions.redis_store import RedisStore

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "bench" / "memory.json"
DOC = ROOT / "docs" / "deployment.md"
BEGIN, END = "<!-- sizing table: python -m bench.memory -->", "<!-- end of sizing table -->"
GIB = 1 << 30


def rss() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def per_session(store, n: int, settings: Settings, step: bool) -> dict:
    dp = DataPlane(settings, store, Metrics())
    dp.load_models()
    await dp.start()
    card = dp.worker("demand").card
    gc.collect()
    before = rss() if isinstance(store, MemoryStore) else int((await store._r.info("memory"))["used_memory"])
    ids = []
    for _ in range(n):
        ids.append((await dp.sessions.create("demand")).id)
    if step:  # one step each, so every session also holds its last reply for retries
        for sid in ids:
            await dp.sessions.step(sid, np.asarray([[30000.0, 1.0, 1.0]], np.float32), 0)
    gc.collect()
    after = rss() if isinstance(store, MemoryStore) else int((await store._r.info("memory"))["used_memory"])
    await dp.stop()
    return {"sessions": n, "bytes_per_session": (after - before) / n, "state_bytes": card.state_bytes, "stepped": step}


def run_case(case: str, n: int) -> dict:
    settings = Settings(model_repository=ROOT / "models", max_sessions=10 * n)
    if case.startswith("memory"):
        store = MemoryStore(3600, rows=settings.max_sessions)  # as the service makes it
        return asyncio.run(per_session(store, n, settings, step=case == "memory_stepped"))
    from harness.redis import redis_server

    with redis_server() as r:
        return asyncio.run(per_session(RedisStore(r.url, 3600), n, settings, step=True))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sessions", type=int, default=100_000)
    p.add_argument("--redis-sessions", type=int, default=10_000)
    p.add_argument("--case", choices=["memory", "memory_stepped", "redis"], help="one case in this process")
    p.add_argument("--render", action="store_true", help="rewrite the docs table from the saved results")
    a = p.parse_args()
    if a.render:
        write_table(json.loads(RESULTS.read_text()))
        return
    if a.case:
        print(json.dumps(run_case(a.case, a.redis_sessions if a.case == "redis" else a.sessions)))
        return
    out = {}
    for case in ("memory", "memory_stepped", "redis"):  # each in a fresh process: RSS never shrinks
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.memory",
                "--case",
                case,
                "--sessions",
                str(a.sessions),
                "--redis-sessions",
                str(a.redis_sessions),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        out[case] = json.loads(r.stdout) if r.returncode == 0 else {"failed": r.stderr.strip().splitlines()[-1:]}
    print(json.dumps(out))
    if any("failed" in v for v in out.values()):
        sys.exit("a case failed: nothing written")
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    write_table(out)


def table(results: dict) -> list[str]:
    """The sizing table, every figure from ``results``."""
    m, ms, r = results["memory"], results["memory_stepped"], results["redis"]
    rows = [
        (f"memory, created and idle (RSS growth over {m['sessions']:,} sessions)", m),
        (f"memory, after a step (keeps its last reply for retries; {ms['sessions']:,} sessions)", ms),
        (f"Redis, after a step (`used_memory` growth over {r['sessions']:,} sessions)", r),
    ]
    lines = [
        f"Default model: h and C are {m['state_bytes']:,} bytes of float32 per session.",
        "",
        "| store | bytes per session | sessions per GiB |",
        "|---|---:|---:|",
    ]
    lines += [f"| {what} | {v['bytes_per_session']:,.0f} | {GIB / v['bytes_per_session']:,.0f} |" for what, v in rows]
    return lines


def write_table(results: dict) -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + "\n".join(table(results)) + "\n" + text[end:])


if __name__ == "__main__":
    main()
