"""The ceiling: onnxruntime in-process, one thread, no server. Rows/s at given shapes.

``python -m bench.raw_ort --model-dir models/demand/1 --batch 1 64 --seq 1 64``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def measure(model_dir: Path, batch: int, seq: int, seconds: float = 2.0) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    h0 = sess.get_inputs()[1].shape
    layers, hidden = h0[0], h0[2]
    x = np.zeros((batch, seq, 3), np.float32)
    x[..., 0] = 30_000
    s = np.zeros((layers, batch, hidden), np.float32)
    feeds = {"x": x, "h0": s, "c0": s}
    for _ in range(5):
        sess.run(None, feeds)
    times = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {
        "batch": batch,
        "seq": seq,
        "ms_per_call": med * 1000,
        "rows_per_s": batch / med,
        "row_steps_per_s": batch * seq / med,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--seq", type=int, nargs="+", default=[1])
    p.add_argument("--seconds", type=float, default=2.0)
    a = p.parse_args()
    for b in a.batch:
        for s in a.seq:
            print(json.dumps(measure(a.model_dir, b, s, a.seconds)))


if __name__ == "__main__":
    main()
