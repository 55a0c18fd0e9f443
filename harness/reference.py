"""The offline reference: the default model run in-process over whole sequences, and
plausible streams of readings to feed it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from harness.paths import DEFAULT_MODEL


def model_shape(model_dir: Path = DEFAULT_MODEL) -> tuple[int, int]:
    """``(num_layers, hidden_size)`` of a model, as its card states them."""
    card = json.loads((model_dir / "model.json").read_text())
    return int(card["num_layers"]), int(card["hidden_size"])


class Offline:
    """The default model run in-process over whole sequences: the reference for exactness."""

    def __init__(self, model_dir: Path) -> None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model_dir / "model.onnx")).graph.initializer}
        self.std = float(inits["scale.std"])
        self.layers, self.hidden = model_shape(model_dir)

    def run(self, x: np.ndarray, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``x [T, F]`` -> ``(y [T, O], state [2, L, H])`` from zeros (or ``state``)."""
        if state is None:
            state = np.zeros((2, self.layers, self.hidden), np.float32)
        y, hn, cn = self.sess.run(
            None, {"x": np.asarray(x, np.float32)[None], "h0": state[0][:, None], "c0": state[1][:, None]}
        )
        return y[0], np.stack([hn[:, 0], cn[:, 0]])

    def assert_outputs_close(self, got, want) -> None:
        """1e-5 max abs in the model's scaled units (y / std), as in export.verify."""
        err = np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))) / self.std
        assert err <= 1e-5, f"outputs differ by {err:.2e} (scaled units) > 1e-5"


def random_steps(rng: np.random.Generator, n: int, start: int | None = None) -> np.ndarray:
    """``n`` consecutive half-hours of plausible demand readings with their calendar features."""
    t0 = int(rng.integers(0, 336)) if start is None else start
    t = np.arange(t0, t0 + n)
    hour = (t % 48) / 2.0
    dow = (t // 48) % 7
    demand = 28_000 + 6_000 * np.sin(2 * np.pi * (hour - 6) / 24) + rng.normal(0, 500, n)
    return np.stack([demand, hour, dow], axis=1).astype(np.float32)
