"""95% intervals for the test MAE: a block bootstrap by day.

The test split's 672 one-step errors are autocorrelated (a bad afternoon is bad for hours),
so resampling single errors would understate the uncertainty. The bootstrap resamples whole
days (blocks of ``steps_per_day`` consecutive errors) with replacement, ``RESAMPLES`` times
from a fixed seed, and takes the 2.5th and 97.5th percentiles of the resampled MAE. The
difference with the best baseline is resampled the same way, day by day, paired: the same
days for both forecasts, so what they share cancels.

``metrics(actual, model, baselines, steps_per_day)`` gives what the card stores under
``metrics.test.model``: ``mae_ci95`` and ``mae_minus_best_baseline`` (the baseline, the
difference of the MAEs, and its interval). ``export.train`` writes them;
``tests/export/test_intervals.py`` recomputes them from the committed model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RESAMPLES = 10_000
SEED = 0


def day_blocks(values: np.ndarray, steps_per_day: int) -> np.ndarray:
    """``values`` cut into whole days, ``[days, steps_per_day]`` (a partial last day is dropped)."""
    days = len(values) // steps_per_day
    return np.asarray(values[: days * steps_per_day], np.float64).reshape(days, steps_per_day)


def block_bootstrap_ci(values: np.ndarray, steps_per_day: int, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` percentile interval of the mean of ``values``, resampling whole days."""
    blocks = day_blocks(values, steps_per_day)
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(blocks), (RESAMPLES, len(blocks)))
    means = blocks.mean(axis=1)[picks].mean(axis=1)  # days are equally long: the mean of day means
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def metrics(
    actual: np.ndarray, model: np.ndarray, baselines: dict[str, np.ndarray], steps_per_day: int
) -> dict[str, Any]:
    """The model's MAE interval, and its difference with the best baseline (lowest MAE), with
    that difference's interval: negative means the model's error is lower."""
    err = np.abs(np.asarray(model, np.float64) - actual)
    best = min(baselines, key=lambda n: float(np.mean(np.abs(baselines[n] - actual))))
    diff = err - np.abs(np.asarray(baselines[best], np.float64) - actual)
    return {
        "mae_ci95": list(block_bootstrap_ci(err, steps_per_day)),
        "mae_minus_best_baseline": {
            "baseline": best,
            "mae": float(np.mean(diff)),
            "ci95": list(block_bootstrap_ci(diff, steps_per_day)),
        },
        "interval_note": (
            f"95% percentile intervals of a block bootstrap by day ({RESAMPLES} resamples of whole days, seed "
            f"{SEED}); the difference is paired: the same days for both forecasts"
        ),
    }
