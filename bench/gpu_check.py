"""CUDA provider check: parity with CPU and a throughput table, for a machine with an
NVIDIA GPU and ``onnxruntime-gpu``. ``python -m bench.gpu_check [--models DIR ...]``.

For each model: random inputs (non-zero states) through the CPU and CUDA providers must
agree within 1e-4 relative; a stream fed step by step through a real data plane on CUDA
must equal the offline CPU run; then rows/s at batch 1, 16, 64, 256 (one step) for both
providers. Exits 2 with a message where onnxruntime has no CUDA provider.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent


def session(model_dir: Path, provider: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=[provider])
    if s.get_providers()[0] != provider:
        raise SystemExit(f"{provider} did not load for {model_dir}")
    return s


def inputs(rng: np.random.Generator, layers: int, hidden: int, batch: int, seq: int) -> dict[str, np.ndarray]:
    x = np.stack(
        [rng.uniform(2e4, 4e4, (batch, seq)), rng.integers(0, 48, (batch, seq)) / 2, rng.integers(0, 7, (batch, seq))],
        -1,
    )
    return {
        "x": x.astype(np.float32),
        "h0": rng.uniform(-0.9, 0.9, (layers, batch, hidden)).astype(np.float32),
        "c0": rng.normal(0, 1.5, (layers, batch, hidden)).astype(np.float32),
    }


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-3)))


def rows_per_s(s: ort.InferenceSession, feeds: dict[str, np.ndarray], seconds: float = 1.0) -> float:
    for _ in range(5):
        s.run(None, feeds)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s.run(None, feeds)
        n += 1
    return n * feeds["x"].shape[0] / (time.perf_counter() - t0)


async def streamed(model_dir: Path, x: np.ndarray) -> np.ndarray:
    from service.config import Settings
    from service.core.dataplane import DataPlane
    from service.metrics import Metrics
    from service.sessions.memory import MemoryStore

    dp = DataPlane(
        Settings(model_repository=model_dir.parent.parent, providers=("cuda",)), MemoryStore(3600), Metrics()
    )
    dp.load_models()
    await dp.start()
    try:
        name = model_dir.parent.name
        sid = (await dp.sessions.create(name)).id
        return np.concatenate([(await dp.sessions.step(sid, x[t : t + 1])).outputs for t in range(len(x))])
    finally:
        await dp.stop()


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__)
    p.add_argument(
        "--models",
        type=Path,
        nargs="+",
        default=[ROOT / "models" / "demand" / "1", ROOT / "bench" / ".models" / "demand512" / "1"],
    )
    a = p.parse_args()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print(
            f"error: this onnxruntime ({ort.__version__}) has no CUDA provider: {ort.get_available_providers()}; "
            "install onnxruntime-gpu on a machine with an NVIDIA GPU",
            file=sys.stderr,
        )
        return 2
    rng = np.random.default_rng(0)
    ok = True
    print("| model | check | max rel. error | ok |\n|---|---|---:|---|")
    table = []
    for d in a.models:
        if not (d / "model.onnx").exists():
            print(f"| {d} | missing | | |")
            continue
        cpu, cuda = session(d, "CPUExecutionProvider"), session(d, "CUDAExecutionProvider")
        layers, hidden = cpu.get_inputs()[1].shape[0], cpu.get_inputs()[1].shape[2]
        for batch, seq in ((1, 1), (7, 13), (64, 200)):
            feeds = inputs(rng, layers, hidden, batch, seq)
            err = max(rel_err(g, c) for g, c in zip(cuda.run(None, feeds), cpu.run(None, feeds), strict=True))
            ok &= err <= 1e-4
            print(
                f"| {d.parent.name} | random inputs, batch {batch} seq {seq} | {err:.2e} | {'yes' if err <= 1e-4 else 'NO'} |"
            )
        x = inputs(rng, layers, hidden, 1, 50)["x"][0]
        zeros = np.zeros((layers, 1, hidden), np.float32)
        want = cpu.run(None, {"x": x[None], "h0": zeros, "c0": zeros})[0][0]
        err = rel_err(asyncio.run(streamed(d, x)), want)
        ok &= err <= 1e-4
        print(
            f"| {d.parent.name} | session streamed step by step on CUDA vs one CPU pass | {err:.2e} | {'yes' if err <= 1e-4 else 'NO'} |"
        )
        for batch in (1, 16, 64, 256):
            feeds = inputs(rng, layers, hidden, batch, 1)
            table.append((d.parent.name, batch, rows_per_s(cpu, feeds), rows_per_s(cuda, feeds)))
    print(
        f"\nGPU: {ort.get_device()}\n\n| model | batch | CPU rows/s | CUDA rows/s | CUDA/CPU |\n|---|---:|---:|---:|---:|"
    )
    for name, batch, c, g in table:
        print(f"| {name} | {batch} | {c:.0f} | {g:.0f} | {g / c:.2f}× |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
