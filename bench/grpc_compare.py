"""gRPC against REST, WebSocket and the naive baseline, measured in one run on one machine.

``python -m bench.grpc_compare [--seconds S]`` runs, against one service process and one
naive server: unary steps (naive, REST ``/v1/sessions/{id}/step``, gRPC ``ModelInfer`` with
a sequence) at 1 and 64 streams, and streamed steps (WebSocket binary frames, gRPC
``ModelStreamInfer``) at 64 streams with 32 readings in flight per stream. It writes
``docs/bench/grpc.json`` and the "gRPC" section of ``docs/benchmarks.md`` (which
``bench.report`` keeps when it rewrites the file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.report import GRPC_BEGIN, GRPC_END
from bench.run import DEFAULT, load, machine, put_section
from bench.servers import ROOT, Proc, serve

STREAMED = ["--window", "32"]
PLAN: list[tuple[str, str, int, list[str]]] = [
    ("naive", "naive", 1, []),
    ("naive", "naive", 64, []),
    ("service", "rest-step", 1, []),
    ("service", "grpc-unary", 1, []),
    ("service", "rest-step", 64, []),
    ("service", "grpc-unary", 64, []),
    ("service", "ws", 64, STREAMED),
    ("service", "grpc-stream", 64, STREAMED),
]
BEGIN, END = GRPC_BEGIN, GRPC_END


def trivial_rpc_cpu_us(p: Proc, calls: int = 2000, conc: int = 16) -> float:
    """Server CPU per ``ServerLive`` call (no data plane at all): gRPC's own cost per call."""
    import grpc

    async def go(n: int) -> None:
        async with grpc.aio.insecure_channel(p.grpc) as ch:
            call = ch.unary_unary("/inference.GRPCInferenceService/ServerLive")

            async def worker() -> None:
                for _ in range(n // conc):
                    await call(b"", timeout=30)  # an empty ServerLiveRequest

            await asyncio.gather(*(worker() for _ in range(conc)))

    asyncio.run(go(200))
    cpu0 = p.cpu_seconds()
    asyncio.run(go(calls))
    return 1e6 * (p.cpu_seconds() - cpu0) / calls


def measure(seconds: float, warmup: float) -> tuple[list[dict[str, Any]], float]:
    results, trivial = [], 0.0
    for kind in ("naive", "service"):
        with serve(kind, DEFAULT) as p:
            for k, scenario, c, extra in PLAN:
                if k == kind:
                    r = load(p, scenario, c, seconds, warmup, DEFAULT, extra)
                    r["server"] = kind
                    results.append(r)
            if kind == "service":
                trivial = trivial_rpc_cpu_us(p)
    return results, trivial


def section(data: dict[str, Any]) -> str:
    R = data["results"]

    def get(scenario: str, c: int) -> dict[str, Any] | None:
        return next((r for r in R if r["scenario"] == scenario and r["concurrency"] == c), None)

    rows = [
        "| transport | streams | steps/s | p50 ms | p99 ms | server CPU µs / step | client CPU µs / step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "naive": "naive (client carries h, C)",
        "rest-step": "REST step",
        "grpc-unary": "gRPC ModelInfer (sequence)",
        "ws": "WebSocket, 32 in flight",
        "grpc-stream": "gRPC ModelStreamInfer, 32 in flight",
    }
    for _, scenario, c, _ in PLAN:
        r = get(scenario, c)
        if r:
            steps = max(1.0, r["steps_per_s"] * r["duration_s"])
            rows.append(
                f"| {names[scenario]} | {c} | {r['steps_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                f"| {r['server_cpu_ms_per_1000']:.0f} | {1e6 * r['client_cpu_s'] / steps:.0f} |"
            )
    ratios = []
    for a, b, c in (
        ("grpc-unary", "rest-step", 1),
        ("grpc-unary", "rest-step", 64),
        ("grpc-stream", "rest-step", 64),
        ("grpc-stream", "ws", 64),
        ("grpc-unary", "naive", 64),
    ):
        ra, rb = get(a, c), get(b, c)
        if ra and rb and rb["steps_per_s"]:
            ratios.append(f"{names[a]} / {names[b]} at {c}: **{ra['steps_per_s'] / rb['steps_per_s']:.2f}×**")
    target = get("grpc-stream", 64), get("rest-step", 64)
    met = bool(target[0] and target[1] and target[0]["steps_per_s"] >= 3 * target[1]["steps_per_s"])
    return "\n".join(
        [
            BEGIN,
            "## gRPC",
            "",
            f"`python -m bench.grpc_compare` ({data['seconds']:g} s per point after {data['warmup']:g} s warm-up, one "
            f"run each; {data['machine']}; {data['note']}). Server CPU is the service process's user + system time "
            "over the run, scaled to the measured window, per step answered; client CPU is the load generator's. All points come from the same run.",
            "",
            *rows,
            "",
            "Ratios (steps/s): " + "; ".join(ratios) + ".",
            "",
            f"A trivial RPC (`ServerLive`, 16 concurrent callers) costs the server "
            f"{data['trivial_rpc_server_cpu_us']:.0f} µs of CPU per call in the same run"
            + (
                f", {100 * data['trivial_rpc_server_cpu_us'] / target[1]['server_cpu_ms_per_1000']:.0f} % of a REST "
                "step's: gRPC's own cost per message, before any of this service's work."
                if target[1]
                else "."
            ),
            "",
            f"Target: streaming gRPC ≥ 3× REST steps/s at 64 streams: **{'met' if met else 'not met'}** in this run.",
            "",
            END,
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.grpc_compare", description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--note", default="the machine was shared with other work while measuring: figures are noisy")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    a = p.parse_args()
    t0 = time.time()
    results, trivial = measure(a.seconds, a.warmup)
    data = {
        "results": results,
        "trivial_rpc_server_cpu_us": trivial,
        "seconds": a.seconds,
        "warmup": a.warmup,
        "machine": machine(),
        "note": a.note,
    }
    data["wall_s"] = round(time.time() - t0, 1)
    (a.out / "bench").mkdir(parents=True, exist_ok=True)
    (a.out / "bench" / "grpc.json").write_text(json.dumps(data, indent=1))
    put_section(a.out / "benchmarks.md", BEGIN, END, section(data))
    print(f"wrote {a.out / 'benchmarks.md'} (gRPC section) in {data['wall_s']} s")


if __name__ == "__main__":
    main()
