"""NVIDIA Triton Inference Server as a peer: the same ``model.onnx`` behind Triton's sequence
batcher and a python-backend model (``bench/triton/model.py``) that keeps each sequence's
(h, C), CPU only.

``bench/triton/setup.sh`` builds Triton into ``.tools/triton`` (the ``tritonserver`` binary
of the ``nvidia-pytriton`` wheel, in a venv of its own). ``serve_triton`` writes a model
repository for one configuration (strategy, instances), starts ``tritonserver`` on free
ports and yields a :class:`bench.servers.Proc` whose CPU figure covers the server and its
python-backend stub processes.

``python -m bench.triton_peer`` starts it, checks a streamed sequence against one offline
onnxruntime run over the whole sequence, and prints the largest difference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.servers import DEFAULT_MODEL_DIR, ROOT, Proc
from harness.procs import free_port, stop, wait_ready

HOME = ROOT / ".tools" / "triton"
MODEL = "demand"
IDLE_US = 5_000_000  # a sequence that never sends END frees its batcher slot after 5 s

CONFIG = """name: "{name}"
backend: "python"
max_batch_size: {max_batch}
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ -1, 3 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ -1, 1 ] }} ]
sequence_batching {{
  max_sequence_idle_microseconds: {idle_us}
  {strategy}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "END" control [ {{ kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "READY" control [ {{ kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }} ] }}
  ]
}}
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
"""

STRATEGIES = {
    # batches formed from the oldest requests of up to 64 candidate sequences, no added delay
    "oldest": "oldest { max_candidate_sequences: 64 max_queue_delay_microseconds: 0 }",
    # one batch slot per live sequence on each instance
    "direct": "direct { max_queue_delay_microseconds: 0 }",
}


def install() -> None:
    subprocess.run(["bash", str(ROOT / "bench" / "triton" / "setup.sh")], check=True)


def environment() -> dict[str, str]:
    """What ``bench/triton/setup.sh`` recorded: the binary, backends and library paths."""
    return dict(line.split("=", 1) for line in (HOME / "env").read_text().splitlines() if "=" in line)


def write_repository(
    root: Path, model_dir: Path, site: str, strategy: str, instances: int, max_batch: int = 64
) -> None:
    version = root / MODEL / "1"
    version.mkdir(parents=True)
    (version / "site-packages.txt").write_text(site + "\n")
    shutil.copy(model_dir / "model.onnx", version / "model.onnx")
    shutil.copy(ROOT / "bench" / "triton" / "model.py", version / "model.py")
    (root / MODEL / "config.pbtxt").write_text(
        CONFIG.format(
            name=MODEL, max_batch=max_batch, idle_us=IDLE_US, strategy=STRATEGIES[strategy], instances=instances
        )
    )


@contextmanager
def serve_triton(strategy: str = "oldest", instances: int = 1, model_dir: Path = DEFAULT_MODEL_DIR) -> Iterator[Proc]:
    install()
    env = environment()
    with tempfile.TemporaryDirectory(prefix="triton-repo-") as tmp:
        write_repository(Path(tmp), model_dir, env["TRITON_SITE"], strategy, instances)
        http, grpc, metrics = free_port(), free_port(), free_port()
        args = [
            env["TRITON_BIN"],
            f"--model-repository={tmp}",
            f"--backend-directory={env['TRITON_BACKENDS']}",
            f"--http-port={http}",
            f"--grpc-port={grpc}",
            f"--metrics-port={metrics}",
            "--allow-gpu-metrics=false",
            "--log-verbose=0",
            "--log-info=false",
            "--exit-timeout-secs=10",
        ]
        penv = {
            **os.environ,
            "LD_LIBRARY_PATH": env["TRITON_LIBS"]
            + (":" + os.environ["LD_LIBRARY_PATH"] if "LD_LIBRARY_PATH" in os.environ else ""),
        }
        log = Path(tmp) / "triton.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(args, cwd=tmp, env=penv, stdout=out, stderr=subprocess.STDOUT)
            p = Proc(f"http://127.0.0.1:{http}", proc, f"127.0.0.1:{grpc}")
            try:
                wait_ready(proc, f"{p.url}/v2/models/{MODEL}/ready", 120, lambda: log.read_text(errors="replace"))
                yield p
            finally:
                stop(proc)


def check(url: str, model_dir: Path = DEFAULT_MODEL_DIR, steps: int = 40) -> float:
    """Stream ``steps`` readings one request each; the largest |difference| from one offline
    run, relative to the largest output (the outputs are in MW, ~30,000: float32's own
    rounding there is ~0.002)."""
    import httpx
    import numpy as np
    import onnxruntime as ort

    from bench.loadgen import reading

    xs = np.asarray([reading(t) for t in range(steps)], np.float32)
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    h0 = next(i for i in sess.get_inputs() if i.name == "h0")
    z = np.zeros((int(h0.shape[0]), 1, int(h0.shape[2])), np.float32)
    (offline,) = sess.run(["y"], {"x": xs[None], "h0": z, "c0": z})
    got = []
    with httpx.Client(base_url=url, timeout=10) as c:
        for t in range(steps):
            body = {
                "inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": xs[t].tolist()}],
                "parameters": {"sequence_id": 77, "sequence_start": t == 0, "sequence_end": t == steps - 1},
            }
            r = c.post(f"/v2/models/{MODEL}/infer", json=body)
            r.raise_for_status()
            got.append(r.json()["outputs"][0]["data"][0])
    return float(np.abs(np.asarray(got) - offline[0, :, 0]).max() / np.abs(offline).max())


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.triton_peer", description=__doc__)
    ap.add_argument("--strategy", choices=sorted(STRATEGIES), default="oldest")
    ap.add_argument("--instances", type=int, default=1)
    a = ap.parse_args()
    with serve_triton(a.strategy, a.instances) as p:
        print(
            f"Triton ({a.strategy}, {a.instances} instance(s)) at {p.url}: max |streamed - offline| / max |offline| = {check(p.url):.3g}"
        )


if __name__ == "__main__":
    main()
