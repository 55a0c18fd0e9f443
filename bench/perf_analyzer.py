"""Triton's perf_analyzer against the service, next to the project's own load generator.

Sequence mode (``demand``: one reading per request, sequences of 20, the server keeping the
state) and stateless mode (``demand.stateless``: windows of 20 readings from a zero state),
at concurrency 1, 16 and 64, with the same flags as ``docs/clients.md`` plus the
concurrency and window length. perf_analyzer's CSV carries throughput, p50/p90/p95/p99
and the server-side breakdown it reads from the statistics extension.

``python -m bench.perf_analyzer`` prints the results as JSON; ``bench.run`` includes them
in ``docs/benchmarks.md``. perf_analyzer is installed by ``scripts/tools/perf_analyzer.sh``.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.servers import DEFAULT_MODEL_DIR, serve

ROOT = Path(__file__).resolve().parent.parent
MODES = {
    "sequence": ["-m", "demand", "--shape", "x:1,3", "--input-data", "zero", "--sequence-length", "20"],
    "stateless": ["-m", "demand.stateless", "--shape", "x:20,3", "--input-data", "zero"],
}
CONCURRENCY = (1, 16, 64)
# perf_analyzer's CSV columns (microseconds) -> our keys (milliseconds)
COLUMNS = {
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
    "Client Send": "client_send_ms",
    "Network+Server Send/Recv": "network_server_ms",
    "Server Queue": "server_queue_ms",
    "Server Compute Input": "server_compute_input_ms",
    "Server Compute Infer": "server_compute_infer_ms",
    "Server Compute Output": "server_compute_output_ms",
    "Client Recv": "client_recv_ms",
}


def install() -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "tools" / "perf_analyzer.sh")], check=True)


CRASH_RETRIES = 2  # perf_analyzer's own crashes (SIGSEGV) rerun before the point counts as failed


def run_point(url: str, mode: str, concurrency: int, window_ms: int) -> dict[str, Any]:
    """One perf_analyzer run at one concurrency; raises with its output if it fails. A run in
    which perf_analyzer itself crashes (a segmentation fault of its asynchronous HTTP client,
    which prints "Unexpected error: received CURLMsg=..." with garbage values first; seen at 32
    connections against this service, whose next four runs of the same point passed) is run
    again, and the result says how often (``crashes``)."""
    crashes = 0
    while True:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "pa.csv"
            cmd = [str(ROOT / "scripts" / "perf_analyzer"), *MODES[mode], "-u", url.removeprefix("http://")]
            # -s 100: accept the first three windows; on a shared machine a 10 % criterion may never settle
            cmd += ["-i", "http", "--concurrency-range", str(concurrency), "-p", str(window_ms), "-s", "100"]
            cmd += ["-f", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
            if proc.returncode == -signal.SIGSEGV and crashes < CRASH_RETRIES:
                crashes += 1
                continue
            if proc.returncode != 0 or not out.exists():
                raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
            (row,) = list(csv.DictReader(out.open()))
        r: dict[str, Any] = {"mode": mode, "concurrency": concurrency, "infer_per_s": float(row["Inferences/Second"])}
        r |= {key: float(row[col]) / 1000 for col, key in COLUMNS.items() if col in row}
        return r | ({"crashes": crashes} if crashes else {})


def measure(window_ms: int = 1000) -> list[dict[str, Any]]:
    install()
    results = []
    with serve("service", DEFAULT_MODEL_DIR) as p:
        for mode in MODES:
            for c in CONCURRENCY:
                results.append(run_point(p.url, mode, c, window_ms))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.perf_analyzer", description=__doc__)
    ap.add_argument("--window-ms", type=int, default=1000, help="perf_analyzer's measurement window (-p)")
    a = ap.parse_args()
    print(json.dumps(measure(a.window_ms), indent=1))


if __name__ == "__main__":
    main()
