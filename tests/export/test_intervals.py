"""The block bootstrap by day: what it resamples and how wide it is."""

from __future__ import annotations

import numpy as np
import pytest

from export.intervals import block_bootstrap_ci, day_blocks, metrics


def test_days_are_resampled_whole():
    """Errors constant within each day: every resample's mean is a mean of day values, so the
    interval's ends lie within the days' range and a constant series has no width."""
    days = np.repeat(np.array([1.0, 2.0, 3.0, 4.0]), 48)
    lo, hi = block_bootstrap_ci(days, 48)
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    assert block_bootstrap_ci(np.full(480, 7.0), 48) == (7.0, 7.0)
    assert day_blocks(np.arange(100.0), 48).shape == (2, 48)  # a partial day is dropped


def test_autocorrelated_errors_get_a_wider_interval_than_independent_ones():
    """The same values, shuffled across days (independent) or kept as whole bad and good days:
    the block bootstrap sees the days' spread, which single-value resampling would hide."""
    rng = np.random.default_rng(3)
    blocky = np.repeat(rng.normal(100, 20, 14), 48) + rng.normal(0, 2, 14 * 48)
    shuffled = rng.permutation(blocky)
    wide = np.subtract(*block_bootstrap_ci(blocky, 48)[::-1])
    narrow = np.subtract(*block_bootstrap_ci(shuffled, 48)[::-1])
    assert wide > 4 * narrow


def test_the_difference_is_paired_and_names_the_best_baseline():
    rng = np.random.default_rng(4)
    actual = rng.normal(0, 1, 14 * 48)
    model = actual + rng.normal(0, 0.5, actual.size)
    baselines = {"good": actual + rng.normal(0, 1.0, actual.size), "bad": actual + 5.0}
    got = metrics(actual, model, baselines, 48)
    vs = got["mae_minus_best_baseline"]
    assert vs["baseline"] == "good"
    assert vs["mae"] == pytest.approx(np.mean(np.abs(model - actual)) - np.mean(np.abs(baselines["good"] - actual)))
    assert vs["ci95"][0] < vs["mae"] < vs["ci95"][1] < 0  # the model is better, and the interval says so
