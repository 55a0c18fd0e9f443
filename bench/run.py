"""Run the benchmark suite and write ``docs/benchmarks.md`` with plots.

``python -m bench.run --quick`` (under 5 minutes: one short run per point) or ``--full``
(3 runs of 15 s per point, medians, more concurrency levels). Every figure is given next
to baselines measured minutes apart on the same machine in the same run: the naive
server (``bench/naive_server.py``) and raw in-process onnxruntime (``bench/raw_ort.py``).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench import perf_analyzer, raw_ort
from bench.servers import ROOT, Proc, serve
from harness.reference import model_shape

BIG = ROOT / "bench" / ".models" / "demand512" / "1"
DEFAULT = ROOT / "models" / "demand" / "1"


def ensure_big_model() -> Path:
    """The compute-bound case: a 2-layer hidden-512 LSTM with random weights, same contract."""
    if not (BIG / "model.onnx").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "export.train",
                "--random-weights",
                "--hidden",
                "512",
                "--layers",
                "2",
                "--name",
                "demand512",
                "--models",
                str(BIG.parent.parent),
                "--no-plots",
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return BIG


def scrape(text: str, family: str) -> dict[str, float]:
    """Sum of samples per bucket label (``le``) or plain value, over all label sets."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(family):
            name_labels, value = line.rsplit(" ", 1)
            m = re.search(r'le="([^"]+)"', name_labels)
            key = m.group(1) if m else name_labels.split("{")[0]
            out[key] = out.get(key, 0.0) + float(value)
    return out


def loadgen_command(
    p: Proc, scenario: str, c: int, seconds: float, warmup: float, model_dir: Path, extra: list[str]
) -> list[str]:
    """The load generator's command line for one point against ``p`` (its gRPC port for the
    gRPC scenarios), the naive client's state shaped like the model's."""
    layers, hidden = model_shape(model_dir)
    return [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        p.grpc if scenario.startswith("grpc") else p.url,
        "--scenario",
        scenario,
        "-c",
        str(c),
        "-d",
        str(seconds),
        "--warmup",
        str(warmup),
        "--hidden",
        str(hidden),
        "--layers",
        str(layers),
        "--model",
        model_dir.parent.name,
        *extra,
    ]


def run_loadgen(command: list[str]) -> dict[str, Any]:
    """Run the load generator to its end; its result (the JSON object it prints last)."""
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed:\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def load(
    p: Proc, scenario: str, c: int, seconds: float, warmup: float, model_dir: Path, extra: list[str]
) -> dict[str, Any]:
    before_m, cpu0 = p.metrics() if scenario != "naive" else "", p.cpu_seconds()
    r = run_loadgen(loadgen_command(p, scenario, c, seconds, warmup, model_dir, extra))
    r["server_cpu_s"] = p.cpu_seconds() - cpu0
    # the CPU time spans warm-up and measurement, the request count the measurement only:
    # scaled to the measured window (the rate is steady by then)
    measured = r["server_cpu_s"] * seconds / (seconds + warmup)
    r["server_cpu_ms_per_1000"] = 1e6 * measured / r["requests"] if r["requests"] else None
    if scenario != "naive":
        after = p.metrics()
        for fam in ("lstm_batch_size", "lstm_queue_wait_seconds"):
            b, a = scrape(before_m, fam + "_"), scrape(after, fam + "_")
            delta = {k: a.get(k, 0.0) - b.get(k, 0.0) for k in a}
            r[fam] = delta
        bs = r["lstm_batch_size"]
        r["mean_batch"] = bs.get("lstm_batch_size_sum", 0) / max(1.0, bs.get("lstm_batch_size_count", 0))
        qw = r["lstm_queue_wait_seconds"]
        r["mean_queue_wait_ms"] = (
            1000 * qw.get("lstm_queue_wait_seconds_sum", 0) / max(1.0, qw.get("lstm_queue_wait_seconds_count", 0))
        )
    r["peak_rss_mb"] = p.peak_rss_bytes() / 2**20
    return r


def points(full: bool) -> list[tuple[str, str, int, list[str]]]:
    """(server kind, scenario, concurrency, extra loadgen args) for the default model."""
    cs = [1, 4, 16, 64] if full else [1, 64]
    pts = [("naive", "naive", c, []) for c in cs] + [("service", "rest-step", c, []) for c in cs]
    pts += [("service", s, c, []) for s in ("predict", "v2-binary", "v2-json") for c in (1, 64)]
    pts += [("service", "chunked", 64, [])]
    pts += [("service", "ws", 64, ["--window", "32"])]  # pipelined: up to 32 readings in flight per stream
    return pts


def run_all(full: bool) -> dict[str, Any]:
    seconds, warmup, repeats = (15.0, 3.0, 3) if full else (4.0, 1.0, 1)
    big = ensure_big_model()
    plan: list[tuple[str, Path, str, int, list[str]]] = [(k, DEFAULT, s, c, e) for k, s, c, e in points(full)]
    cs_big = [1, 16, 64] if full else [64]
    plan += [("naive", big, "naive", c, []) for c in cs_big] + [("service", big, "rest-step", c, []) for c in cs_big]
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(plan) * repeats, desc="bench", unit="run", file=sys.stderr)
    for kind, model_dir in sorted({(k, m) for k, m, *_ in plan}):
        with serve(kind, model_dir) as p:
            for k, m, scenario, c, extra in plan:
                if (k, m) != (kind, model_dir):
                    continue
                runs = []
                for _ in range(repeats):
                    runs.append(load(p, scenario, c, seconds, warmup, m, extra))
                    bar.update()
                best = sorted(runs, key=lambda r: r["steps_per_s"])[len(runs) // 2]  # the median run
                best["median_of"] = len(runs)
                best["steps_per_s_runs"] = [r["steps_per_s"] for r in runs]
                best["model"] = "hidden512" if m == big else "default"
                best["server"] = kind
                results.append(best)
    bar.close()
    raw = [
        {"model": name, **raw_ort.measure(d, b, s, 2.0 if full else 1.0)}
        for name, d in (("default", DEFAULT), ("hidden512", big))
        for b, s in ((1, 1), (64, 1), (64, 64))
    ]
    mem = json.loads(
        subprocess.run(
            [sys.executable, "-m", "bench.memory"]
            + ([] if full else ["--sessions", "20000", "--redis-sessions", "5000"]),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    pa = perf_analyzer.measure(3000 if full else 1000)
    return {
        "results": results,
        "raw_ort": raw,
        "perf_analyzer": pa,
        "memory": mem,
        "mode": "full" if full else "quick",
        "machine": machine(),
        "seconds_per_run": seconds,
        "warmup_s": warmup,
        "repeats": repeats,
    }


def put_section(md: Path, begin: str, end: str, block: str) -> None:
    """Replace the text between the markers ``begin`` and ``end`` of ``md`` with ``block``
    (markers included), or add ``block`` at the end; the rest of the file is kept."""
    text = md.read_text() if md.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    md.write_text(text)


def median_round(rounds: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The round whose ``key`` is the median (the upper one of an even count)."""
    return sorted(rounds, key=lambda r: r[key])[len(rounds) // 2]


def paired(a: list[float], b: list[float], ratio: bool) -> float:
    """The median over the rounds of ``a / b`` (``ratio``) or ``a - b``: servers measured in the
    same round share the machine's speed of that moment, so each round compares like with like."""
    return statistics.median(x / y if ratio else x - y for x, y in zip(a, b, strict=True))


def machine() -> str:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    import os

    import onnxruntime

    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="one short run per point (default)")
    g.add_argument("--full", action="store_true", help="3 x 15 s runs per point, medians")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    a = p.parse_args()
    t0 = time.time()
    data = run_all(a.full)
    data["wall_s"] = round(time.time() - t0, 1)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench").mkdir(exist_ok=True)
    (a.out / "bench" / f"results-{data['mode']}.json").write_text(json.dumps(data, indent=1))
    from bench.report import write_report

    write_report(data, a.out)
    print(f"wrote {a.out / 'benchmarks.md'} in {data['wall_s']} s")


if __name__ == "__main__":
    main()
