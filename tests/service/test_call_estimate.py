"""The warm-up's estimate of a call (``OnnxModel.estimate_s``): a fixed part, a part per time
step (the recurrence runs its steps one after the other, however few rows) and a part per
row-step, recovered from the warm-up's calls. The calls run for real; the clock is injected,
each call advancing it by a known cost, so the figures are exact."""

from __future__ import annotations

import numpy as np
import pytest

from harness.paths import DEFAULT_MODEL
from service.config import Settings
from service.runtime import onnx_model
from service.runtime.onnx_model import OnnxModel
from service.runtime.repository import read_card

CALL, STEP, ROW_STEP = 50e-6, 30e-6, 20e-6


def cost(rows: int, steps: int) -> float:
    return CALL + steps * (STEP + rows * ROW_STEP)


@pytest.mark.parametrize("max_batch", [64, 8, 1])
def test_the_warm_up_recovers_a_calls_fixed_step_and_row_step_costs(
    monkeypatch: pytest.MonkeyPatch, max_batch: int
) -> None:
    model = OnnxModel(read_card(DEFAULT_MODEL), Settings(model_repository=DEFAULT_MODEL.parent.parent))
    clock = [0.0]
    run = model.run

    def timed(x: np.ndarray, state: np.ndarray, lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        clock[0] += cost(x.shape[0], x.shape[1])
        return run(x, state, lengths)

    monkeypatch.setattr(model, "run", timed)
    monkeypatch.setattr(onnx_model.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(model, "_measure_hop", lambda: 0.0)
    model.warm_up(max_batch)
    # one long sequence costs its steps one after the other: a large batch's per-row-step
    # figure alone (the estimate before) read a 1 x 256 call at 40% of this
    for rows, steps in [(1, 1), (1, 256), (max_batch, 1), (max_batch, 8), (3, 40)]:
        if rows <= max_batch:
            assert model.estimate_s(rows, steps) == pytest.approx(cost(rows, steps), rel=1e-9)
    if max_batch == 1:  # one row only: its steps' cost, whatever part is called per row
        assert model.row_step_s == 0.0 and model.step_s == pytest.approx(STEP + ROW_STEP)
