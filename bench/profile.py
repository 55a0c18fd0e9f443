"""Where the server's CPU goes under load: a sampling profile (py-spy) grouped by layer.

``python -m bench.profile --scenario rest-step -c 64`` starts the service on the default
model, drives it with the load generator, samples the server process with py-spy for
``--seconds`` once the load is steady, and prints (as Markdown) the share of samples per
layer -- uvicorn's HTTP protocol, Starlette/FastAPI, the service's transports, its data
plane, onnxruntime, Prometheus metrics, numpy, the event loop -- and the functions with the
most samples of their own. Each sample is charged to the innermost frame that belongs to a
known layer (a numpy call made by the data plane counts as numpy).

py-spy reads the process's memory: it needs ptrace permission (root, or
``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import loadgen_command
from bench.servers import DEFAULT_MODEL_DIR, ROOT, serve

# (layer, path fragments of its frames), tried in order on each frame
LAYERS = (
    ("onnxruntime", ("onnxruntime/",)),
    ("Prometheus metrics", ("prometheus_client/",)),
    ("numpy", ("numpy/",)),
    ("uvicorn (HTTP protocol)", ("uvicorn/", "httptools")),
    ("Starlette / FastAPI", ("starlette/", "fastapi/")),
    ("service: transports (service/api)", ("service/api/",)),
    (
        "service: data plane (core, batching, sessions, runtime)",
        ("service/core/", "service/batching/", "service/sessions/", "service/runtime/"),
    ),
    (
        "service: middleware and metrics glue",
        ("service/metrics.py", "service/logs.py", "service/api/protocol/statistics.py"),
    ),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop", "selectors.py", "runners.py")),
    ("logging", ("logging/",)),
)


def layer_of(frame: str) -> str | None:
    for name, parts in LAYERS:
        if any(p in frame for p in parts):
            return name
    return None


def summarize(raw: Path, top: int) -> list[str]:
    """Markdown tables from a py-spy ``--format raw`` file."""
    by_layer: collections.Counter[str] = collections.Counter()
    by_func: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        by_func[frames[-1]] += count
        layer = next(
            (lay for f in reversed(frames) if (lay := layer_of(f))),
            "other (interpreter, C code without a Python frame)",
        )
        by_layer[layer] += count
    if not total:
        return ["py-spy recorded no samples."]
    lines = ["| layer | share of samples |", "|---|---:|"]
    lines += [f"| {name} | {100 * n / total:.1f} % |" for name, n in by_layer.most_common()]
    lines += ["", f"{total} samples. Functions with the most samples of their own:", ""]
    lines += ["| function (file:line) | share |", "|---|---:|"]
    lines += [f"| `{f[:110]}` | {100 * n / total:.1f} % |" for f, n in by_func.most_common(top)]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="rest-step", help="a bench.loadgen scenario (default rest-step)")
    p.add_argument("-c", "--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=int, default=8, help="seconds sampled")
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--top", type=int, default=20, help="functions listed")
    a = p.parse_args()
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is missing: install the dev dependencies (make setup)")
    with serve("service", DEFAULT_MODEL_DIR) as server, tempfile.TemporaryDirectory() as tmp:
        load = subprocess.Popen(
            loadgen_command(server, a.scenario, a.concurrency, a.seconds + 4, 1.0, DEFAULT_MODEL_DIR, []),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)  # warm-up done, batches steady
        raw = Path(tmp) / "profile.txt"
        record = ["record", "-p", str(server.pids()[0]), "-d", str(a.seconds), "-r", str(a.rate)]
        done = subprocess.run(
            [spy, *record, "-f", "raw", "-o", str(raw), "--nonblocking"], capture_output=True, text=True
        )
        if done.returncode != 0:
            load.kill()
            sys.exit(f"py-spy failed: {done.stderr.strip()[-500:]}")
        out, _ = load.communicate(timeout=a.seconds + 60)
        print(f"`{a.scenario}`, {a.concurrency} streams (loadgen: {out.strip().splitlines()[-1][:160]})\n")
        print("\n".join(summarize(raw, a.top)))


if __name__ == "__main__":
    main()
