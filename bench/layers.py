"""What each layer of a v2 sequence step costs, and what the lean design would cost: measured
by taking layers away from the running server (``bench/layer_server.py``) under the same
load, beside the minimal reference, in one interleaved run.

``python -m bench.layers`` (``make bench-layers``) starts the minimal reference and the service
five times -- answering at the HTTP protocol with fixed bytes, answering after the HTTP front
with a fixed reply, the lean prototype with its batches on the worker thread and on the event
loop, and as it is (gRPC off: its batches on the event loop) -- checks that the prototypes
and the service stream the same outputs as one offline onnxruntime run, then drives each with
the load generator (v2 JSON sequence steps, one reading per request, at 32 streams and at one
stream) in turn, round after round. Server CPU per request is split by thread: the event
loop's thread (the process's main thread: HTTP, decoding, the data plane's Python) and the
others (onnxruntime's worker thread). Before the servers start, ``bench.dataplane`` measures
the same step's Python in one process, without HTTP or onnxruntime. Writes
``docs/bench/layers.json`` and the layer section of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import uvloop

from bench import dataplane
from bench.peers import load, rate_ratio
from bench.run import machine, median_round, paired, put_section
from bench.servers import DEFAULT_MODEL_DIR, ROOT, Proc, serve
from bench.triton_peer import check as exactness

BEGIN, END = "<!-- layers:begin -->", "<!-- layers:end -->"
SCENARIO, STREAMS = "v2-json", 32
MINIMAL = "minimal reference"
# (name, layer_server argument, its environment, what it measures), in the order of the table
SERVERS = (
    ("protocol only", "protocol", {}, "uvicorn's HTTP protocol answers the infer route with fixed bytes"),
    ("+ HTTP front", "front", {}, "keys, limits, request id, decode, encode, log, metrics; a fixed reply"),
    ("+ lean data plane (prototype)", "lean", {}, "the front's work plus the lean design's step path"),
    ("+ lean data plane, batches on the event loop", "lean-inline", {}, "the same, no worker thread"),
    ("+ data plane (the service)", "full", {}, "the service as it is"),
)


def layer(name: str, extra: dict[str, str]) -> AbstractContextManager[Proc]:
    """The service started by ``bench/layer_server.py`` with layer ``name``, gRPC off."""
    return serve(f"layer:{name}", DEFAULT_MODEL_DIR, {"LSTM_GRPC_ENABLED": "false", **extra})


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of process ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def measure(p: Proc, seconds: float, warmup: float, streams: int = STREAMS) -> dict[str, Any]:
    before = thread_cpu(p.proc.pid)
    r = load(p, SCENARIO, streams, seconds, warmup)
    after = thread_cpu(p.proc.pid)
    per_req = 1e6 / max(1e-9, r["steps_per_s"] * (seconds + warmup))  # µs per CPU second per request
    main = (after.get(p.proc.pid, 0.0) - before.get(p.proc.pid, 0.0)) * per_req
    total = sum(after.values()) - sum(before.get(t, 0.0) for t in after)
    return {
        "req_per_s": r["req_per_s"],
        "p50_ms": r["p50_ms"],
        "errors": r.get("errors", {}),
        "cpu_us": total * per_req,
        "loop_thread_cpu_us": main,
        "other_threads_cpu_us": max(0.0, total * per_req - main),  # clock ticks: never below zero
    }


def run(seconds: float, warmup: float, rounds: int) -> dict[str, Any]:
    in_process = uvloop.run(dataplane.run(300, 5))
    runs: dict[str, list[dict[str, Any]]] = {}
    with ExitStack() as stack:
        procs = {MINIMAL: stack.enter_context(serve("minimal", DEFAULT_MODEL_DIR))}
        for name, arg, env, _ in SERVERS:
            procs[name] = stack.enter_context(layer(arg, env))
        exact = {name: exactness(procs[name].url) for name, arg, _, _ in SERVERS if arg not in ("protocol", "front")}
        for _ in range(rounds):
            for streams in (STREAMS, 1):
                for name, p in procs.items():
                    r = measure(p, seconds, warmup, streams)
                    runs.setdefault(name if streams == STREAMS else f"{name}@1", []).append(r)
                    print(
                        f"{name:30} {streams:2} {r['req_per_s']:8.0f} req/s  p50 {r['p50_ms']:.3f} ms  "
                        f"CPU {r['cpu_us']:4.0f} µs/req (loop thread {r['loop_thread_cpu_us']:.0f}, "
                        f"others {r['other_threads_cpu_us']:.0f})",
                        flush=True,
                    )
    rows = []
    for name in procs:
        rs, one = runs[name], runs[f"{name}@1"]
        rows.append(
            {
                "server": name,
                **median_round(rs, "req_per_s"),
                "runs_req_per_s": [round(r["req_per_s"]) for r in rs],
                "c1": {**median_round(one, "p50_ms"), "runs_p50_ms": [round(r["p50_ms"], 3) for r in one]},
            }
        )
    return {
        "machine": machine(),
        "seconds": seconds,
        "warmup": warmup,
        "rounds": rounds,
        "exactness": exact,
        "rows": rows,
        "dataplane": in_process,
    }


def section(data: dict[str, Any]) -> list[str]:
    rows = {r["server"]: r for r in data["rows"]}
    mini = rows[MINIMAL]
    what = {name: text for name, _, _, text in SERVERS}
    lines = [
        BEGIN,
        "## What each layer costs (`make bench-layers`)",
        "",
        f"`python -m bench.layers`: v2 JSON sequence steps, one reading per request, {STREAMS} streams; "
        f"{data['rounds']} interleaved rounds of {data['seconds']:g} s after {data['warmup']:g} s of warm-up, the "
        f"median round shown (by req/s; a ratio between servers is the median of the rounds' ratios). Machine: "
        f"{data['machine']}; the load generator shares the cores. The service is "
        "started with layers of the step's path replaced (`bench/layer_server.py`), gRPC off. Server CPU per "
        "request is split by thread: the event loop's (HTTP, decoding, the data plane's Python) and the others "
        "(onnxruntime's worker thread).",
        "",
        "| server | what it does per request | req/s | × minimal | CPU µs / request | event loop thread | other threads |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in (MINIMAL, *what):
        r = rows[name]
        desc = what.get(name, "the least a Python process must do per step (`bench/minimal_server.py`)")
        lines.append(
            f"| {name} | {desc} | {r['req_per_s']:,.0f} | {rate_ratio(r, mini):.2f}× | "
            f"{r['cpu_us']:.0f} | {r['loop_thread_cpu_us']:.0f} | {r['other_threads_cpu_us']:.0f} |"
        )
    ex = ", ".join(f"{n}: {v:.2g}" for n, v in data["exactness"].items())
    proto, front, lean, inline, full = (rows[name] for name, *_ in SERVERS)
    loop = {
        k: r["loop_thread_cpu_us"] for k, r in (("protocol", proto), ("front", front), ("lean", inline), ("full", full))
    }
    lines += [
        "",
        f"Outputs streamed over 40 readings against one offline onnxruntime run, largest difference relative to "
        f"the largest output: {ex}.",
        "",
        f"On the event loop's thread, from this run: the protocol's floor {loop['protocol']:.0f} µs per request, "
        f"the HTTP front {loop['front'] - loop['protocol']:.0f} µs more, the lean prototype's step path with its "
        f"batches on the loop {loop['lean'] - loop['front']:.0f} µs more, the service's data plane "
        f"{loop['full'] - loop['front']:.0f} µs more; the minimal reference's whole loop thread "
        f"{mini['loop_thread_cpu_us']:.0f} µs. Against the service, "
        f"the lean prototype serves {rate_ratio(lean, full):.2f}× the requests at "
        f"{lean['cpu_us'] / full['cpu_us']:.2f}× the CPU per request, and with its batches on the event loop "
        f"{rate_ratio(inline, full):.2f}× at {inline['cpu_us'] / full['cpu_us']:.2f}×. " + placement(full),
        "",
        "The lean hot path's targets on this run, for the service and for the best prototype:",
        "",
        "| target | the service | lean prototype, batches on the event loop |",
        "|---|---:|---:|",
        "| ≤ 100 µs of server CPU per request | "
        + " | ".join(f"{r['cpu_us']:.1f} µs ({'met' if r['cpu_us'] <= 100 else '**no**'})" for r in (full, inline))
        + " |",
        "| ≥ 0.6× the minimal reference's req/s | "
        + " | ".join(f"{(x := rate_ratio(r, mini)):.3f}× ({'met' if x >= 0.6 else '**no**'})" for r in (full, inline))
        + " |",
    ]
    if "c1" in full:
        lines += [
            "| p50 at concurrency 1 (the target, ≤ 0.8× Triton's, is measured by `make bench-peers`) | "
            f"{full['c1']['p50_ms']:.3f} ms | {inline['c1']['p50_ms']:.3f} ms "
            f"({paired(inline['c1']['runs_p50_ms'], full['c1']['runs_p50_ms'], True):.2f}× the service's, paired) |",
            *concurrency_one(rows, what),
        ]
    if "dataplane" in data:
        d = data["dataplane"]
        lines += [
            "",
            f"The same step's Python without HTTP, sockets or onnxruntime (`python -m bench.dataplane`, in one "
            f"process before the servers start: {dataplane.STREAMS} streams, onnxruntime's call a no-op, CPU per step, "
            "median of 5 rounds); the server under load multiplies these figures:",
            "",
            "| path | CPU µs per step |",
            "|---|---:|",
            *(f"| {name} | {us:.1f} |" for name, us in d.items()),
        ]
    return [*lines, END]


def placement(full: dict[str, Any]) -> str:
    """Where the service's batches ran in this run, from its threads' CPU."""
    if full["other_threads_cpu_us"] < 1:
        return (
            "With no gRPC request in progress the service ran its batches on the event loop too, loaded or not "
            "(`ModelWorker.loop_limit`, bounded by `LSTM_HTTP_INLINE_COMPUTE_US`), so the service and the lean "
            "prototype on the loop differ by their step paths alone."
        )
    return (
        f"The service's other threads took {full['other_threads_cpu_us']:.0f} µs per request: some of its batches "
        "ran on onnxruntime's worker thread (estimated past `LSTM_HTTP_INLINE_COMPUTE_US` on this machine), so "
        "the two differ by where their batches ran as well as by their step paths."
    )


def concurrency_one(rows: dict[str, dict[str, Any]], what: dict[str, str]) -> list[str]:
    """The same servers with one stream, one request at a time: every batch holds one request,
    and a request's latency is the sum of the layers it passes (the concurrency 1 target)."""
    c1 = {name: r["c1"] for name, r in rows.items()}
    p50 = {name: [1000 * v for v in r["runs_p50_ms"]] for name, r in c1.items()}  # µs, round by round
    proto, front, _, inline, full = (name for name, *_ in SERVERS)
    lines = [
        "",
        "One stream, one request at a time, in the same rounds: every batch holds one request and "
        "onnxruntime's call of one row runs on every request, so each layer's Python adds to the latency. "
        "Each server's median round by p50 is shown; the ratio to the service is the median of the rounds' "
        "ratios (each round's servers share the machine's speed of that moment).",
        "",
        "| server | p50 ms at concurrency 1 | × the service's (paired) | CPU µs / request | event loop thread | "
        "other threads |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in (MINIMAL, *what):
        r = c1[name]
        lines.append(
            f"| {name} | {r['p50_ms']:.3f} | {paired(p50[name], p50[full], True):.2f}× | {r['cpu_us']:.0f} | "
            f"{r['loop_thread_cpu_us']:.0f} | {r['other_threads_cpu_us']:.0f} |"
        )
    lines += [
        "",
        f"At concurrency 1 the protocol's floor (the load generator, the kernel and uvicorn's parsing) is "
        f"{statistics.median(p50[proto]):.0f} µs at the median; by the rounds' differences, the HTTP front adds "
        f"{paired(p50[front], p50[proto], False):.0f} µs, and the service's data plane with onnxruntime's one-row "
        f"call {paired(p50[full], p50[front], False):.0f} µs more. The lean prototype with its batches on the "
        f"event loop (no batcher task, no session records, three of the data plane's metrics) answers "
        f"{abs(lean := paired(p50[inline], p50[full], False)):.0f} µs {'sooner' if lean < 0 else 'later'} than the "
        f"service by the rounds' differences, {paired(p50[inline], p50[full], True):.2f}× its p50 by their "
        f"ratios. The minimal reference, whose onnxruntime calls run on a worker thread (two thread "
        f"hand-overs per request), answers at {paired(p50[MINIMAL], p50[full], True):.2f}× the service's p50.",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__)
    ap.add_argument("-d", "--seconds", type=float, default=4.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is shown)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--render", action="store_true", help="write the section from the saved layers.json")
    a = ap.parse_args()
    saved = a.out / "bench" / "layers.json"
    if a.render:
        data = json.loads(saved.read_text())
    else:
        t0 = time.time()
        data = run(a.seconds, a.warmup, a.rounds)
        data["wall_s"] = round(time.time() - t0, 1)
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(data, indent=1))
    put_section(a.out / "performance.md", BEGIN, END, "\n".join(section(data)))
    print(f"wrote {a.out / 'performance.md'} (layers) from {saved}")


if __name__ == "__main__":
    main()
