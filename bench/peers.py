"""Peers, measured in one run: the naive FastAPI server, the minimal reference
(``bench/minimal_server.py``: the least a Python process must do per step, no guarantees),
this service (one process with the memory store; 1 and 2 workers over Redis), the lean
design's prototype (``bench/layer_server.py lean-inline``: what that design reaches with the
guarantees a step touches, v2 JSON only) and NVIDIA Triton Inference Server (its python
backend behind the sequence batcher: ``oldest`` with 1 instance, ``direct`` with 2).

``python -m bench.peers`` (``make bench-peers``) starts every peer once, then runs each point
on each peer in turn, point after point (interleaved: a change in the machine's load touches
every peer alike), with the same load generator (``bench/loadgen.py``): v2 sequence steps as
JSON at 1, 32 and 64 streams and as binary tensors at 32, one reading per request; the naive
server gets its own protocol (the client carries h and C) at the same concurrencies; the
minimal reference runs v2 JSON and v1 steps. Then Triton's perf_analyzer in sequence mode
against the service and Triton where it fits. Server CPU is counted over all of a peer's
processes (workers, Triton's python stubs) and given per request for every peer. Writes
``docs/bench/results-peers.json`` and the peer section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench import perf_analyzer
from bench.run import loadgen_command, machine, median_round, paired, put_section, run_loadgen
from bench.servers import DEFAULT_MODEL_DIR, ROOT, Proc, serve
from bench.triton_peer import check as exactness_of
from bench.triton_peer import serve_triton
from harness.procs import free_port
from harness.redis import RedisServer

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
MINIMAL = "minimal reference"
LEAN = "lean prototype (batches on the loop)"
OURS, TRITON = "ours (memory, 1 process)", "Triton (oldest, 1 instance)"


@contextmanager
def redis() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        r = RedisServer(free_port(), Path(tmp))
        r.start()
        try:
            yield r.url
        finally:
            r.stop()


def peers(redis_url: str) -> dict[str, Callable[[], AbstractContextManager[Proc]]]:
    rd = {"LSTM_SESSION_STORE": "redis", "LSTM_REDIS_URL": redis_url}
    return {
        "naive FastAPI": lambda: serve("naive", DEFAULT_MODEL_DIR),
        MINIMAL: lambda: serve("minimal", DEFAULT_MODEL_DIR),
        OURS: lambda: serve("service", DEFAULT_MODEL_DIR),
        LEAN: lambda: serve("layer:lean-inline", DEFAULT_MODEL_DIR, {"LSTM_GRPC_ENABLED": "false"}),
        "ours (Redis, 1 worker)": lambda: serve("service", DEFAULT_MODEL_DIR, {**rd, "LSTM_WORKERS": "1"}),
        "ours (Redis, 2 workers)": lambda: serve("service", DEFAULT_MODEL_DIR, {**rd, "LSTM_WORKERS": "2"}),
        TRITON: lambda: serve_triton("oldest", 1),
        "Triton (direct, 2 instances)": lambda: serve_triton("direct", 2),
    }


def plan() -> list[tuple[str, int]]:
    return [
        ("v2-json", 1),
        ("v2-json", 32),
        ("v2-json", 64),
        ("v2-binary", 32),
        ("grpc-unary", 32),
        ("grpc-stream", 64),
        ("rest-step", 32),
        ("ws", 64),
    ]


# who runs what beyond v2 JSON and binary: unary gRPC on ours and Triton's sequence batcher
# (oldest); v1 steps, WebSocket and gRPC streaming on ours, against Triton's best path (this
# Triton build's ModelStreamInfer crashed -- SIGSEGV in TRITONBACKEND_RequestRelease -- with 64
# streams, and with 32 streams of 8 in flight on the second run in a row)
ONLY = {
    "grpc-unary": (OURS, TRITON),
    "grpc-stream": (OURS,),
    "rest-step": (OURS, "ours (Redis, 2 workers)"),
    "ws": (OURS, "ours (Redis, 2 workers)"),
}
WINDOW = {"ws": 32, "grpc-stream": 32}  # readings in flight per stream
MINIMAL_SCENARIOS = ("v2-json", "rest-step", "grpc-unary", "grpc-stream")  # what the minimal reference answers


def runs_on(peer: str, scenario: str) -> str | None:
    """The scenario ``peer`` runs for a point of the plan (None: it sits this one out)."""
    if peer.startswith("naive"):
        return "naive" if scenario == "v2-json" else None
    if peer == MINIMAL:
        return scenario if scenario in MINIMAL_SCENARIOS else None
    if peer == LEAN:  # the prototype serves v2 JSON sequence steps of one reading; the rest is the service's
        return scenario if scenario == "v2-json" else None
    if scenario in ONLY:
        return scenario if peer in ONLY[scenario] else None
    return scenario


def load(p: Proc, scenario: str, c: int, seconds: float, warmup: float) -> dict[str, Any]:
    cpu0 = p.cpu_seconds()
    window = ["--window", str(WINDOW[scenario])] if scenario in WINDOW else []
    r = run_loadgen(loadgen_command(p, scenario, c, seconds, warmup, DEFAULT_MODEL_DIR, window))
    # the CPU of the whole run (warm-up and the sequences' END included) per measured request
    r["server_cpu_s"] = p.cpu_seconds() - cpu0
    r["server_cpu_ms_per_req"] = 1000 * r["server_cpu_s"] / max(1e-9, r["steps_per_s"] * (seconds + warmup))
    r["server_cores"] = r["server_cpu_s"] / (seconds + warmup)
    return r


def run_all(seconds: float, warmup: float, repeats: int, pa_window_ms: int) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    pa: list[dict[str, Any]] = []
    exactness: dict[str, float] = {}
    with ExitStack() as stack:
        url = stack.enter_context(redis())
        procs = {name: stack.enter_context(start()) for name, start in peers(url).items()}
        for name, p in procs.items():
            if name.startswith("Triton") or name == LEAN:
                exactness[name] = exactness_of(p.url)
        runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for _ in range(repeats):
            for scenario, c in plan():
                for name, p in procs.items():
                    sc = runs_on(name, scenario)
                    if sc is None:
                        continue
                    r = load(p, sc, c, seconds, warmup)
                    runs.setdefault((name, sc, c), []).append(r)
                    print(
                        f"{name:32} {sc:9} c={c:<3} {r['req_per_s']:8.0f} req/s  p50 {r['p50_ms']:.2f} ms"
                        f"  server CPU {1000 * r['server_cpu_ms_per_req']:.0f} µs/req",
                        flush=True,
                    )
        for (name, _, _), rs in runs.items():
            results.append(
                {
                    **median_round(rs, "req_per_s"),
                    "peer": name,
                    "runs_req_per_s": [r["req_per_s"] for r in rs],
                    "runs_p50_ms": [r["p50_ms"] for r in rs],
                }
            )
        perf_analyzer.install()
        for name in (OURS, "ours (Redis, 2 workers)", TRITON):
            for c in (1, 32):
                p = procs[name]
                cpu0 = p.cpu_seconds()
                t0 = time.monotonic()
                r = perf_analyzer.run_point(p.url, "sequence", c, pa_window_ms)
                r["peer"] = name
                r["server_cores"] = (p.cpu_seconds() - cpu0) / (time.monotonic() - t0)
                r["server_cpu_us_per_infer"] = 1e6 * r["server_cores"] / max(1e-9, r["infer_per_s"])
                pa.append(r)
                print(
                    f"{name:32} perf_analyzer c={c:<3} {r['infer_per_s']:8.0f} infer/s"
                    f"  server CPU {r['server_cpu_us_per_infer']:.0f} µs/infer",
                    flush=True,
                )
    return {
        "machine": machine(),
        "seconds_per_run": seconds,
        "warmup_s": warmup,
        "repeats": repeats,
        "results": results,
        "perf_analyzer": pa,
        "exactness": exactness,
    }


Point = dict[str, Any] | None


def point(R: list[dict[str, Any]], peer: str, sc: str, c: int) -> Point:
    """One peer's result for one scenario and concurrency, or None."""
    return next((r for r in R if r["peer"] == peer and r["scenario"] == sc and r["concurrency"] == c), None)


def _met(text: str, ok: bool) -> str:
    return f"{text}, {'met' if ok else '**not met**'}"


def rate_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """``a``'s requests per second over ``b``'s, the median of the rounds' ratios: every peer runs a
    point once per round, so a round's figures share the machine's speed of that moment."""
    return paired(a["runs_req_per_s"], b["runs_req_per_s"], True)


def p50_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """``a``'s p50 over ``b``'s, round by round (see :func:`rate_ratio`)."""
    return paired(a["runs_p50_ms"], b["runs_p50_ms"], True)


def _ratio(a: dict[str, Any], b: dict[str, Any], want: float) -> tuple[str, bool]:
    """``a``'s requests per second against ``b``'s (each its median run) and the rounds' ratio
    (three decimals: a ratio near its target must not read as met), and whether it reaches ``want``."""
    q = rate_ratio(a, b)
    return f"{a['req_per_s']:.0f} vs {b['req_per_s']:.0f}; {q:.3f}× by round", q >= want


def targets(R: list[dict[str, Any]]) -> list[str]:
    """The lean hot path's targets, each row computed from this run (none when a peer is
    missing): this service's figure, and the lean prototype's where it runs the same point (the
    measured limit of the lean design: a target it misses too is out of reach of that design)."""

    redis1 = "ours (Redis, 1 worker)"
    rows: list[tuple[str, str, bool, str]] = []  # target, ours, met, the lean prototype's

    def ratio(name: str, a: Point, b: Point, want: float, lean: Point = None) -> None:
        if a and b:
            rows.append((name, *_ratio(a, b, want), _met(*_ratio(lean, b, want)) if lean else "–"))

    for sc in ("v2-json", "rest-step"):
        a, lean = point(R, OURS, sc, 32), point(R, LEAN, sc, 32)
        ratio(f"{sc}, 32 streams: ≥ 2× Triton's v2 JSON req/s", a, point(R, TRITON, "v2-json", 32), 2.0, lean)
        ratio(f"{sc}, 32 streams: ≥ 0.6× the minimal reference", a, point(R, MINIMAL, sc, 32), 0.6, lean)
        if a:
            us = 1000 * a["server_cpu_ms_per_req"]
            lean_us = 1000 * lean["server_cpu_ms_per_req"] if lean else None
            limit = "–" if lean_us is None else _met(f"{lean_us:.1f} µs", lean_us <= 100)
            rows.append((f"{sc}, 32 streams: ≤ 100 µs of server CPU per request", f"{us:.1f} µs", us <= 100, limit))
    a1, t1, l1 = point(R, OURS, "v2-json", 1), point(R, TRITON, "v2-json", 1), point(R, LEAN, "v2-json", 1)
    if a1 and t1:
        q = p50_ratio(a1, t1)
        limit = "–"
        if l1 is not None:
            ql = p50_ratio(l1, t1)
            limit = _met(f"{l1['p50_ms']:.3f} ms; {ql:.3f}× by round", ql <= 0.8)
        measured = f"{a1['p50_ms']:.3f} vs {t1['p50_ms']:.3f} ms; {q:.3f}× by round"
        rows.append(("concurrency 1: p50 ≤ 0.8× Triton's", measured, q <= 0.8, limit))
    ratio(
        "Redis store, one process, v2 JSON at 32: ≥ 1× Triton",
        point(R, redis1, "v2-json", 32),
        point(R, TRITON, "v2-json", 32),
        1.0,
    )
    ratio(
        "WebSocket (32 in flight), 64 streams: ≥ 1.5× the v1 step route",
        point(R, OURS, "ws", 64),
        point(R, OURS, "rest-step", 32),
        1.5,
    )
    ratio(
        "gRPC ModelStreamInfer, 64 streams: ≥ 1× Triton's v2 JSON req/s",
        point(R, OURS, "grpc-stream", 64),
        point(R, TRITON, "v2-json", 64),
        1.0,
    )
    if not rows:
        return []
    out = ["", "| target | this service | met | the lean prototype, same point |", "|---|---|---|---|"]
    out += [f"| {name} | {measured} | {'yes' if ok else '**no**'} | {lean} |" for name, measured, ok, lean in rows]
    out += [
        "",
        "The lean prototype (`bench/layer_server.py`, `lean-inline`: the service's HTTP front with the lean design's"
        " step path -- every live sequence's state a slot of one preallocated array, gathered and scattered by index;"
        " no task, record or batcher per step; every batch on the event loop -- keeping the guarantees a step touches;"
        " v2 JSON only) is the design the targets ask for, built as a prototype: its column is what that design"
        " reached in this run, beside what this service reached. Each figure is a peer's median run; each ratio is the"
        " median of the rounds' ratios (for WebSocket against v1 steps, and `ModelStreamInfer` against v2 JSON at 64"
        " streams, of two points run in the same round, a minute or so apart). `docs/performance.md` measures the"
        " prototype layer by layer.",
    ]
    mine, least = point(R, OURS, "v2-json", 32), point(R, MINIMAL, "v2-json", 32)
    if mine and least:
        out += [
            "",
            f"At 32 streams a v2 JSON step cost this service {1000 * mine['server_cpu_ms_per_req']:.0f} µs of server CPU"
            f" and the minimal reference {1000 * least['server_cpu_ms_per_req']:.0f} µs"
            f" ({mine['server_cpu_ms_per_req'] / least['server_cpu_ms_per_req']:.1f}×) for the same model and"
            " onnxruntime calls: the difference is this service's own per-request work. Where it goes:"
            " `docs/performance.md`.",
        ]
    for rpc, sc, c, against, what in (
        ("Unary `ModelInfer`", "grpc-unary", 32, "grpc-unary", "unary gRPC"),
        ("`ModelStreamInfer`", "grpc-stream", 64, "v2-json", "v2 JSON"),
    ):
        mine, least, them = point(R, OURS, sc, c), point(R, MINIMAL, sc, c), point(R, TRITON, against, c)
        if mine and least and them:
            out += [
                "",
                f"{rpc} at {c} streams: this service {mine['steps_per_s']:.0f} requests/s at"
                f" {1000 * mine['server_cpu_ms_per_req']:.0f} µs each, the minimal reference (grpc.aio, no guarantees)"
                f" {least['steps_per_s']:.0f} at {1000 * least['server_cpu_ms_per_req']:.0f} µs:"
                f" {rate_ratio(mine, least):.2f}× the least a Python gRPC server does, which is"
                f" itself {rate_ratio(least, them):.2f}× Triton's {what}.",
            ]
    return out


def section(data: dict[str, Any]) -> list[str]:
    R = data["results"]

    lines = [
        BEGIN,
        "## Peers: Triton Inference Server, the naive server, the minimal reference, the lean prototype, 1 and 2 workers",
        "",
        f"`make bench-peers` (`python -m bench.peers`), {data['repeats']} run(s) of {data['seconds_per_run']:g} s per point"
        f" after {data['warmup_s']:g} s warm-up, the median shown; every peer up at once and the points run on each in"
        f" turn, so a change in the machine's load touches all alike. Machine: {data['machine']}; the load generator"
        " (one Python asyncio process) shares the 2 cores with the server, and other work may have shared the machine,"
        " so compare peers within this table, as ratios, not with figures measured at other times. Each peer's median"
        " run is shown; a ratio between peers is the median of the rounds' ratios (the peers of one round share the"
        " machine's speed of that moment).",
        "",
        "Peers: the naive FastAPI server (one onnxruntime call per request on the event loop, the client carrying h"
        " and C); the minimal reference (`bench/minimal_server.py`: the least a Python process must do per step, with"
        " no guarantees -- uvloop, httptools, orjson, every sequence's (h, C) a slot of one preallocated array, the"
        " requests that arrive during a batch run as the next batch, one onnxruntime call each in one worker thread;"
        " v2 JSON, v1 steps and gRPC only); this service in one process with the memory store, and over Redis with"
        " `LSTM_WORKERS` 1 and 2; the lean design's prototype (`bench/layer_server.py lean-inline`, v2 JSON only:"
        " its figures stand beside the targets below);"
        " Triton (`tritonserver` from the `nvidia-pytriton` wheel, CPU only) with `bench/triton/model.py` on the"
        " python backend behind the sequence batcher, `max_batch_size` 64, `oldest` (64 candidate sequences, no"
        " queue delay) with 1 instance, or `direct` with 2. Every request is one reading of one sequence (v2"
        " `sequence_id`, start on the first, end after the run); the naive server is driven with its own protocol."
        " Server CPU counts all of a peer's processes (workers, Triton's python stubs) over the run's warm-up and"
        " measurement: per request (one step) at the measured rate, and as cores (CPU seconds per second). gRPC: unary"
        " `ModelInfer` on ours, the minimal reference and Triton; streaming (`ModelStreamInfer`, 32 readings in flight per stream) on ours"
        " and the minimal reference: this Triton build crashed (SIGSEGV in `TRITONBACKEND_RequestRelease`) under 64 streams, and under 32"
        " streams of 8 in flight on the second run in a row. v1 steps and WebSocket are this service's own"
        " protocols; they are measured against Triton's best path in the run (the targets below).",
        "",
        "| peer | scenario | streams | steps/s | p50 ms | p99 ms | errors | server CPU µs / request | server cores |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for scenario, c in plan():
        for name in dict.fromkeys(r["peer"] for r in R):
            sc = runs_on(name, scenario)
            r = point(R, name, sc, c) if sc else None
            if sc is None or r is None:
                continue
            label = (
                "naive (client state)" if sc == "naive" else sc + (f" ({WINDOW[sc]} in flight)" if sc in WINDOW else "")
            )
            lines.append(
                f"| {name} | {label} | {c} | {r['steps_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
                f" {r['errors'] or 0} | {1000 * r['server_cpu_ms_per_req']:.0f} | {r['server_cores']:.2f} |"
            )
    lines += targets(R)
    ex = data.get("exactness", {})
    if ex:
        lines += [
            "",
            "Streamed outputs against one offline onnxruntime run over the same 40 readings, largest difference"
            " relative to the largest output (float32 rounding): "
            + ", ".join(f"{name} {d:.2g}" for name, d in ex.items())
            + ".",
        ]
    lines += ["", "Against Triton (oldest, 1 instance), v2 JSON, the median of the rounds' ratios:", ""]
    lines += ["| peer | streams | req/s ratio | p50 ratio |", "|---|---:|---:|---:|"]
    for name in (OURS, "ours (Redis, 1 worker)", "ours (Redis, 2 workers)", LEAN, MINIMAL):
        for c in (1, 32, 64):
            a, t = point(R, name, "v2-json", c), point(R, TRITON, "v2-json", c)
            if a and t:
                lines.append(f"| {name} | {c} | {rate_ratio(a, t):.2f}× | {p50_ratio(a, t):.2f}× |")
    if data["perf_analyzer"]:
        lines += [
            "",
            "perf_analyzer (sequence mode: sequences of 20 single-reading requests, 1 s windows, `-s 100`), in the same"
            " run:",
            "",
            "| peer | conc. | infer/s | p50 ms | p99 ms | server queue ms | compute infer ms | server CPU µs / infer"
            " | server cores |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in data["perf_analyzer"]:
            lines.append(
                f"| {r['peer']} | {r['concurrency']} | {r['infer_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
                f" {r.get('server_queue_ms', 0):.3f} | {r.get('server_compute_infer_ms', 0):.3f} |"
                f" {r['server_cpu_us_per_infer']:.0f} | {r['server_cores']:.2f} |"
            )
        crashed = [r for r in data["perf_analyzer"] if r.get("crashes")]
        if crashed:
            lines += [
                "",
                "perf_analyzer itself crashed (a segmentation fault of its HTTP client) and was run again for: "
                + ", ".join(f"{r['peer']} at {r['concurrency']} ({r['crashes']}×)" for r in crashed)
                + ".",
            ]
    lines += [END]
    return lines


def write_section(data: dict[str, Any], md: Path) -> None:
    """Replace the peer section of ``md`` (or add it after the targets) and keep the rest."""
    if not md.exists():
        md.write_text("# Benchmarks\n")
    text = md.read_text()
    block = "\n".join(section(data))
    if BEGIN not in text and "\n## All points" in text:
        head, rest = text.split("\n## All points", 1)
        md.write_text(head + "\n" + block + "\n\n## All points" + rest)
        return
    put_section(md, BEGIN, END, block)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    ap.add_argument("-d", "--seconds", type=float, default=4.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3, help="runs per point (the median is shown)")
    ap.add_argument("--pa-window-ms", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument(
        "--render", action="store_true", help="write the section from the saved results-peers.json, running nothing"
    )
    a = ap.parse_args()
    if a.render:
        write_section(json.loads((a.out / "bench" / "results-peers.json").read_text()), a.out / "benchmarks.md")
        print(f"wrote {a.out / 'benchmarks.md'} (peers) from {a.out / 'bench' / 'results-peers.json'}")
        return
    t0 = time.time()
    data = run_all(a.seconds, a.warmup, a.repeats, a.pa_window_ms)
    data["wall_s"] = round(time.time() - t0, 1)
    (a.out / "bench").mkdir(parents=True, exist_ok=True)
    (a.out / "bench" / "results-peers.json").write_text(json.dumps(data, indent=1))
    write_section(data, a.out / "benchmarks.md")
    print(f"wrote {a.out / 'benchmarks.md'} (peers) in {data['wall_s']} s")


if __name__ == "__main__":
    main()
