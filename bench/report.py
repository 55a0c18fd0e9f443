"""Turn benchmark results into ``docs/benchmarks.md`` and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _find(results: list[dict], **kw: Any) -> dict | None:
    return next((r for r in results if all(r.get(k) == v for k, v in kw.items())), None)


def targets(data: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    R = data["results"]
    rows = []

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    big_s, big_n = (
        _find(R, model="hidden512", server="service", concurrency=64),
        _find(R, model="hidden512", server="naive", concurrency=64),
    )
    if big_s and big_n:
        q = ratio(big_s["steps_per_s"], big_n["steps_per_s"])
        rows.append(
            (
                "hidden-512, 64 streams, REST steps: ≥ 2.5× naive throughput, p99 ≤ 30 ms",
                f"{q:.2f}× ({big_s['steps_per_s']:.0f} vs {big_n['steps_per_s']:.0f} steps/s), p99 {big_s['p99_ms']:.1f} ms",
                "",
                bool(q and q >= 2.5 and big_s["p99_ms"] <= 30),
            )
        )
    d_s, d_n = (
        _find(R, model="default", scenario="rest-step", concurrency=64),
        _find(R, model="default", scenario="naive", concurrency=64),
    )
    if d_s and d_n:
        q = ratio(d_s["steps_per_s"], d_n["steps_per_s"])
        rows.append(
            (
                "default, 64 streams, REST steps: ≥ 1.2× naive",
                f"{q:.2f}× ({d_s['steps_per_s']:.0f} vs {d_n['steps_per_s']:.0f})",
                "",
                bool(q and q >= 1.2),
            )
        )
    c1_s, c1_n = (
        _find(R, model="default", scenario="rest-step", concurrency=1),
        _find(R, model="default", scenario="naive", concurrency=1),
    )
    if c1_s and c1_n:
        q = c1_s["p50_ms"] / c1_n["p50_ms"]
        rows.append(
            (
                "concurrency 1: p50 ≤ 1.2× naive p50",
                f"{q:.2f}× ({c1_s['p50_ms']:.3f} vs {c1_n['p50_ms']:.3f} ms)",
                "",
                q <= 1.2,
            )
        )
    ws = _find(R, model="default", scenario="ws", concurrency=64)
    if ws and d_s:
        q = ws["steps_per_s"] / d_s["steps_per_s"]
        rows.append(
            (
                "WebSocket: ≥ 4× REST steps/s at concurrency 64",
                f"{q:.2f}× ({ws['steps_per_s']:.0f} vs {d_s['steps_per_s']:.0f})",
                "",
                q >= 4,
            )
        )
    ch = _find(R, model="default", scenario="chunked", concurrency=64)
    raw = next((r for r in data["raw_ort"] if r["model"] == "default" and r["batch"] == 64 and r["seq"] == 64), None)
    if ch and raw:
        q = ch["steps_per_s"] / raw["row_steps_per_s"]
        rows.append(
            (
                "chunked (64 sessions × 64 steps): ≥ 50% of raw onnxruntime row-steps/s at batch 64",
                f"{q:.0%} ({ch['steps_per_s']:.0f} vs {raw['row_steps_per_s']:.0f})",
                "",
                q >= 0.5,
            )
        )
    mem = data["memory"].get("memory", {})
    if "bytes_per_session" in mem:
        over = mem["bytes_per_session"] - mem["state_bytes"]
        rows.append(
            (
                "memory store: ≤ state + 512 B per idle session",
                f"{mem['bytes_per_session']:.0f} B ({mem['state_bytes']} B state + {over:.0f} B)",
                "",
                over <= 512,
            )
        )
    return rows


# the hot routes, as the load generator's scenarios name them
ROUTES = (
    ("rest-step", "v1 step (`POST /v1/sessions/{id}/step`)"),
    ("v2-json", "v2 infer, JSON tensors, sequence steps"),
    ("v2-binary", "v2 infer, binary tensors, sequence steps"),
    ("predict", "v1 predict, 1 sequence × 1 step"),
    ("ws", "WebSocket binary frames, 32 in flight"),
    ("chunked", "v1 step, 64 steps per request"),
)


def route_table(data: dict[str, Any]) -> list[str]:
    """Per hot route: throughput at 64 streams and latency at 1, each against the naive server
    of the same run, and the server's CPU per request."""
    R = data["results"]
    n64 = _find(R, model="default", scenario="naive", concurrency=64)
    n1 = _find(R, model="default", scenario="naive", concurrency=1)
    lines = [
        "| route | req/s at 64 | steps/s at 64 | × naive (steps/s) | p50 at 1 (ms) | × naive p50 | server CPU µs / request at 64 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    if n64 and n1:
        lines.append(
            f"| naive server (client carries h, C) | {n64['req_per_s']:.0f} | {n64['steps_per_s']:.0f} | 1.00× | "
            f"{n1['p50_ms']:.3f} | 1.00× | {n64['server_cpu_ms_per_1000']:.0f} |"
        )
    for scen, label in ROUTES:
        r64, r1 = (
            _find(R, model="default", scenario=scen, concurrency=64),
            _find(R, model="default", scenario=scen, concurrency=1),
        )
        if not r64:
            continue
        x = f"{r64['steps_per_s'] / n64['steps_per_s']:.2f}×" if n64 else "–"
        p50 = f"{r1['p50_ms']:.3f}" if r1 else "–"
        px = f"{r1['p50_ms'] / n1['p50_ms']:.2f}×" if r1 and n1 else "–"
        lines.append(
            f"| {label} | {r64['req_per_s']:.0f} | {r64['steps_per_s']:.0f} | {x} | {p50} | {px} | "
            f"{r64['server_cpu_ms_per_1000']:.0f} |"
        )
    return lines


def hot_targets(data: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The hot-route targets: (target, measured, met)."""
    R = data["results"]
    n64 = _find(R, model="default", scenario="naive", concurrency=64)
    n1 = _find(R, model="default", scenario="naive", concurrency=1)
    rows: list[tuple[str, str, bool]] = []
    if not (n64 and n1):
        return rows
    for scen, want in (("v2-json", 3.0), ("v2-binary", 3.0), ("predict", 2.0), ("rest-step", 3.5), ("ws", 12.0)):
        r = _find(R, model="default", scenario=scen, concurrency=64)
        if r:
            q = r["steps_per_s"] / n64["steps_per_s"]
            rows.append(
                (
                    f"{scen}, 64 streams: ≥ {want:g}× naive",
                    f"{q:.2f}× ({r['steps_per_s']:.0f} vs {n64['steps_per_s']:.0f})",
                    q >= want,
                )
            )
    for scen in ("rest-step", "predict", "v2-json", "v2-binary"):
        r = _find(R, model="default", scenario=scen, concurrency=1)
        if r:
            q = r["p50_ms"] / n1["p50_ms"]
            rows.append(
                (
                    f"{scen}, concurrency 1: p50 ≤ 0.8× naive",
                    f"{q:.2f}× ({r['p50_ms']:.3f} vs {n1['p50_ms']:.3f} ms)",
                    q <= 0.8,
                )
            )
    for scen in ("rest-step", "v2-json"):
        r = _find(R, model="default", scenario=scen, concurrency=64)
        if r:
            us = r["server_cpu_ms_per_1000"]
            rows.append((f"{scen}: server CPU ≤ 60 µs per request (64 streams)", f"{us:.0f} µs", us <= 60))
    return rows


def hot_why(data: dict[str, Any]) -> list[str]:
    """Why missed hot-route targets were missed, from the run's own figures."""
    R = data["results"]
    n64 = _find(R, model="default", scenario="naive", concurrency=64)
    if not n64:
        return []
    span = data["seconds_per_run"] + data.get("warmup_s", 3.0 if data["mode"] == "full" else 1.0)
    lines = []
    for scen, want in (("rest-step", 3.5), ("v2-json", 3.0), ("v2-binary", 3.0), ("ws", 12.0)):
        r = _find(R, model="default", scenario=scen, concurrency=64)
        if not r or r["steps_per_s"] / n64["steps_per_s"] >= want:
            continue
        cores = r["server_cpu_s"] / span
        client = r.get("client_cpu_s", 0.0) / data["seconds_per_run"]
        need = 1e6 * cores / (want * n64["steps_per_s"])
        lines.append(
            f"* **{scen}**: {r['steps_per_s']:.0f} steps/s at {r['server_cpu_ms_per_1000']:.0f} µs of server CPU each;"
            f" the service process was busy {cores:.2f} cores and the load generator {client:.2f}. At that"
            f" occupancy, {want:g}× naive needs ≤ {need:.0f} µs per step."
        )
    if not lines:
        return []
    return [
        "**Why the missed hot-route targets were missed.** The service is one Python process: one event loop does"
        " the HTTP parsing, routing, decoding, batching and encoding of every request, so its throughput is one core"
        " divided by its CPU per request (onnxruntime's calls run on the loop too, on a worker thread only while gRPC"
        " requests are in progress or for a long batch). Per route, from this run:",
        "",
        *lines,
        "",
        "Where a step's CPU goes is measured by `python -m bench.route_cost` and `python -m bench.profile`"
        " (`docs/performance.md`).",
    ]


def _raw(data: dict[str, Any], model: str, batch: int, seq: int) -> dict[str, Any] | None:
    return next((r for r in data["raw_ort"] if r["model"] == model and r["batch"] == batch and r["seq"] == seq), None)


def why_chunked(data: dict[str, Any]) -> str:
    raw = _raw(data, "default", 64, 64)
    ch = _find(data["results"], model="default", scenario="chunked", concurrency=64)
    if not (raw and ch):
        return ""
    return (
        f"**Chunked streams.** onnxruntime alone, on one core, runs {raw['row_steps_per_s']:,.0f} row-steps/s at"
        f" batch 64 × 64 steps; the chunked route served {ch['steps_per_s']:,.0f} steps/s"
        f" ({100 * ch['steps_per_s'] / raw['row_steps_per_s']:.0f} % of it), with {ch['server_cpu_ms_per_1000']:.0f} µs"
        " of server CPU per request (HTTP, JSON of 192 numbers in and 64 out, batching)."
    )


def gpu_line() -> str:
    """The GPU run recorded in ``docs/bench/gpu.json`` (by ``bench/gpu_check.py``), or that none is."""
    path = Path(__file__).resolve().parent.parent / "docs" / "bench" / "gpu.json"
    if not path.exists():
        return "No GPU run is recorded: `python -m bench.gpu_check` records one on a machine with a GPU."
    g = json.loads(path.read_text())
    return f"Recorded by `bench/gpu_check.py`: `{json.dumps(g)[:600]}`"


def why_big(data: dict[str, Any]) -> str:
    raw = _raw(data, "hidden512", 64, 1)
    if not raw:
        return ""
    return (
        f"**Hidden-512 p99.** One onnxruntime call on a batch of 64 takes {raw['ms_per_call']:.1f} ms here: a request"
        " that arrives just after a batch left waits for it and the next."
    )


def why_websocket(data: dict[str, Any]) -> str:
    R = data["results"]
    ws, rest = (_find(R, model="default", scenario=s, concurrency=64) for s in ("ws", "rest-step"))
    if not (ws and rest):
        return ""
    span = data["seconds_per_run"] + data.get("warmup_s", 3.0 if data["mode"] == "full" else 1.0)
    return (
        "**WebSocket.** Measured with 32 readings in flight per stream (frames queued behind each other run as one"
        f" step). A WebSocket step cost the server {ws['server_cpu_ms_per_1000']:.0f} µs of CPU against"
        f" {rest['server_cpu_ms_per_1000']:.0f} for a REST step"
        f" ({rest['server_cpu_ms_per_1000'] / ws['server_cpu_ms_per_1000']:.1f}× less), but at"
        f" {ws['steps_per_s']:,.0f} steps/s the service ({ws['server_cpu_s'] / span:.2f} cores) and the load generator"
        f" ({ws.get('client_cpu_s', 0.0) / data['seconds_per_run']:.2f} cores) share the two cores, and onnxruntime's"
        " batches take their share. What would settle it: the load generator on cores of its"
        " own (or in C)."
    )


WHY_MISSED = {"chunked": why_chunked, "hidden-512": why_big, "WebSocket": why_websocket}


def plots(data: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    R = data["results"]
    names = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for model, ax in zip(("default", "hidden512"), axes, strict=True):
        for server, scen, style in (("naive", "naive", "o--"), ("service", "rest-step", "o-")):
            pts = sorted(
                (r["concurrency"], r["steps_per_s"]) for r in R if r["model"] == model and r["scenario"] == scen
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=f"{server} ({scen})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel("steps/s")
        ax.set_title(f"Throughput, {model} model")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bench" / "throughput.png")
    plt.close(fig)
    names.append("bench/throughput.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for model, ax in zip(("default", "hidden512"), axes, strict=True):
        for scen, color in (("naive", "tab:orange"), ("rest-step", "tab:blue")):
            pts = sorted(
                (r["concurrency"], r["p50_ms"], r["p99_ms"]) for r in R if r["model"] == model and r["scenario"] == scen
            )
            if pts:
                c, p50, p99 = zip(*pts, strict=True)
                ax.plot(c, p50, "o-", color=color, label=f"{scen} p50")
                ax.plot(c, p99, "s--", color=color, label=f"{scen} p99")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"Latency, {model} model")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "bench" / "latency.png")
    plt.close(fig)
    names.append("bench/latency.png")

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for r in R:
        if r["server"] == "service" and r["concurrency"] == 64 and r["scenario"] in ("rest-step", "ws", "chunked"):
            buckets = sorted(
                (float(k), v) for k, v in r.get("lstm_batch_size", {}).items() if k.replace(".", "").isdigit()
            )
            prev, xs, ys = 0.0, [], []
            for le, cum in buckets:
                xs.append(le)
                ys.append(cum - prev)
                prev = cum
            total = sum(ys) or 1
            ax.plot(xs, [y / total for y in ys], "o-", label=f"{r['model']} {r['scenario']}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rows per onnxruntime call (bucket upper bound)")
    ax.set_ylabel("share of calls")
    ax.set_title("Batch sizes at 64 concurrent streams")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "bench" / "batch_sizes.png")
    plt.close(fig)
    names.append("bench/batch_sizes.png")
    return names


GRPC_BEGIN, GRPC_END = "<!-- grpc:begin -->", "<!-- grpc:end -->"  # bench.grpc_compare's section


def perf_analyzer_section(data: dict[str, Any]) -> list[str]:
    """Triton's perf_analyzer against the service (``bench/perf_analyzer.py``)."""
    rows = data.get("perf_analyzer")
    if not rows:
        return []
    lines = [
        "",
        "## perf_analyzer (Triton's tool) against the service",
        "",
        "`bench/perf_analyzer.py`: perf_analyzer 2.41.0 over HTTP with the flags of `docs/clients.md`"
        " (`demand`: sequences of 20 single-reading requests, the server keeping the state;"
        " `demand.stateless`: windows of 20 readings from a zero state), `--concurrency-range C`,"
        " `-s 100` (the first three windows: a 10 % criterion may never settle on a shared machine)."
        " Latencies in ms as perf_analyzer reports them; the server columns are the per-request"
        " averages it computes from the statistics extension (`/v2/models/demand/stats`). Compute infer runs from"
        " handing a batch to onnxruntime until its results are back on the event loop, so when the loop and the"
        " load generator compete for the cores it includes that wait, not only onnxruntime's time.",
    ]
    if data.get("perf_analyzer_note"):
        lines += ["", data["perf_analyzer_note"]]
    lines += [
        "",
        "| mode | conc. | infer/s | p50 ms | p90 ms | p99 ms | server queue ms | compute input ms | compute infer ms | compute output ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['mode']} | {r['concurrency']} | {r['infer_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
        f"{r['p99_ms']:.2f} | {r.get('server_queue_ms', 0):.3f} | {r.get('server_compute_input_ms', 0):.3f} | "
        f"{r.get('server_compute_infer_ms', 0):.3f} | {r.get('server_compute_output_ms', 0):.3f} |"
        for r in rows
    ]
    return lines


def write_report(data: dict[str, Any], out: Path) -> None:
    old = (out / "benchmarks.md").read_text() if (out / "benchmarks.md").exists() else ""
    pics = plots(data, out)
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {data['machine']}. Mode: `{data['mode']}` ({data['repeats']} run(s) of {data['seconds_per_run']:g} s per point,"
        f" the median run shown). Load generator and servers share the machine's cores. Rerun with `make bench`"
        " (quick) or `make bench-full`.",
        "",
        "## Targets",
        "",
        "| target | measured | | met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {t} | {m} | {n} | {'yes' if ok else '**no**'} |" for t, m, n, ok in targets(data)]
    lines += [
        "",
        "## Hot routes against the naive server",
        "",
        "Each hot route at 64 streams (closed loop, one reading per request unless said) and at 1, against the naive "
        "server measured in the same run; server CPU is the service process's user + system time over the run, "
        "scaled to the measured window, per request answered.",
        "",
        *route_table(data),
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in hot_targets(data)]
    why = hot_why(data)
    if why:
        lines += ["", *why]
    missed = [t for t, _, _, ok in targets(data) if not ok]
    if missed:
        lines += ["", "## Missed targets: why, and what would fix them", ""]
        for key, why in WHY_MISSED.items():
            if any(key in t for t in missed) and (text := why(data)):
                lines += [text, ""]
    lines += [
        "",
        "## All points",
        "",
        "| model | server | scenario | conc. | steps/s | req/s | p50 ms | p90 ms | p99 ms | errors | mean batch | mean queue wait ms | server CPU ms / 1000 req | peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in data["results"]:
        lines.append(
            f"| {r['model']} | {r['server']} | {r['scenario']} | {r['concurrency']} | {r['steps_per_s']:.0f} | {r['req_per_s']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors'] or 0} | {r.get('mean_batch', 0):.1f} | "
            f"{r.get('mean_queue_wait_ms', 0):.2f} | {r['server_cpu_ms_per_1000'] or 0:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += perf_analyzer_section(data)
    lines += [
        "",
        "## Raw onnxruntime in-process (one thread): the ceiling",
        "",
        "| model | batch | seq | ms/call | row-steps/s |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['batch']} | {r['seq']} | {r['ms_per_call']:.3f} | {r['row_steps_per_s']:.0f} |"
        for r in data["raw_ort"]
    ]
    lines += [
        "",
        "## Memory per session",
        "",
        "| store | sessions | bytes per session | of which state |",
        "|---|---:|---:|---:|",
    ]
    for k, v in data["memory"].items():
        if "bytes_per_session" in v:
            lines.append(f"| {k} | {v['sessions']} | {v['bytes_per_session']:.0f} | {v['state_bytes']} |")
        else:
            lines.append(f"| {k} | failed: {'; '.join(v.get('failed', ['?']))} | | |")
    lines += [
        "",
        "`memory`: sessions created, never stepped (RSS growth). `memory_stepped`: after one step each, so each also",
        "keeps its last reply for idempotent retries. `redis`: Redis `used_memory` growth per stepped session."
        + (f" {data['memory_note']}" if data.get("memory_note") else ""),
        "",
    ]
    lines += [f"![{p}]({p})" for p in pics]
    lines += [
        "",
        "## GPU",
        "",
        gpu_line(),
        "",
    ]
    if GRPC_BEGIN in old and GRPC_END in old:  # measured separately: keep it
        lines += [old[old.index(GRPC_BEGIN) : old.index(GRPC_END) + len(GRPC_END)], ""]
    md = out / "benchmarks.md"
    if "<!-- peers:begin -->" in old and "<!-- peers:end -->" in old:  # bench.peers' section is kept
        peers = "<!-- peers:begin -->" + old.split("<!-- peers:begin -->", 1)[1].split("<!-- peers:end -->", 1)[0]
        at = lines.index("## All points")
        lines[at:at] = [*peers.splitlines(), "<!-- peers:end -->", ""]
    md.write_text("\n".join(lines) + "\n")
