"""The classical baselines: scored on the stated split, with no look-ahead, and what the card says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export import baselines as bl
from export.data import STEPS_PER_DAY, STEPS_PER_WEEK, load


@pytest.fixture(scope="module")
def series():
    return load("taylor")


def _synthetic(n: int = 6 * 336, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A level with a daily and a weekly pattern: what double seasonal smoothing models."""
    t = np.arange(n)
    daily = 3000 * np.sin(2 * np.pi * t / 48) + 1000 * np.cos(4 * np.pi * t / 48)
    weekly = np.where((t // 48) % 7 >= 5, -4000.0, 0.0)
    return 30_000 + daily + weekly + np.random.default_rng(seed).normal(0, noise, n)


@pytest.mark.parametrize("trend", [False, True])
def test_holt_winters_forecasts_use_only_the_past(series, trend):
    """Changing readings from t on leaves every forecast up to and including reading t unchanged."""
    values = series.values.copy()
    before = bl.holt_winters(values, series.val_end, STEPS_PER_DAY, trend=trend)
    cut = series.val_end + 100
    values[cut:] += 5_000
    after = bl.holt_winters(values, series.val_end, STEPS_PER_DAY, trend=trend)
    np.testing.assert_array_equal(before[: cut + 1], after[: cut + 1])
    assert np.all(before[cut + 1 :] != after[cut + 1 :])


def test_double_seasonal_forecasts_use_only_the_past(series):
    model = bl.fit_double_seasonal(series.values, series.val_end, STEPS_PER_DAY, STEPS_PER_WEEK)
    values = series.values.copy()
    before = model.forecast(values)
    cut = series.val_end + 100
    values[cut:] += 5_000
    after = model.forecast(values)
    np.testing.assert_array_equal(before[: cut + 1], after[: cut + 1])


@pytest.mark.parametrize("multiplicative", [False, True])
def test_double_seasonal_learns_an_exact_double_season(multiplicative):
    """On a noiseless level + daily + weekly pattern the fitted method forecasts it exactly."""
    values = _synthetic()
    model = bl.fit_double_seasonal(values, 4 * 336, 48, 336, multiplicative=multiplicative, trend=False)
    err = np.abs(model.forecast(values)[4 * 336 :] - values[4 * 336 :])
    assert err.max() < 1.0  # MW, on readings of about 30,000


def test_double_seasonal_refuses_inconsistent_periods():
    with pytest.raises(ValueError, match="multiple"):
        bl.fit_double_seasonal(_synthetic(), 4 * 336, 48, 100)
    with pytest.raises(ValueError, match="two weekly seasons"):
        bl.fit_double_seasonal(_synthetic(), 300, 48, 336)


def test_baselines_refuse_targets_inside_the_fitting_part(series):
    with pytest.raises(ValueError, match="after the fitting part"):
        bl.forecasts(series.values, series.val_end, np.arange(100, 200), STEPS_PER_DAY, STEPS_PER_WEEK)


def test_card_baselines_are_what_export_baselines_computes(series, default_model_dir):
    """Every baseline in the card is recomputed here on the stated split (fit on train + validation)."""
    card = json.loads((default_model_dir / "model.json").read_text())
    assert card["dataset"]["split"]["test"] == [series.val_end, series.n]
    targets = np.arange(series.val_end, series.n)
    forecasts = bl.forecasts(series.values, series.val_end, targets, STEPS_PER_DAY, STEPS_PER_WEEK)
    assert set(forecasts) == set(bl.NAMES) == set(card["metrics"]["test"]) - {"model"}
    for name, f in forecasts.items():
        got = bl.errors(series.values[targets], f)
        for measure in ("mae", "rmse"):
            # measured spread across OpenBLAS kernels (Haswell, SkylakeX, Zen, Sandybridge, Prescott)
            # and one thread: at most 6e-8 relative (docs/model.md); the tolerance is 16x that
            assert got[measure] == pytest.approx(card["metrics"]["test"][name][measure], rel=1e-6), name
    m = card["metrics"]["test"]
    # Taylor's method is the strongest classical forecaster here, as in Taylor (2003)
    best = min(bl.NAMES, key=lambda name: m[name]["mae"])
    assert best.startswith("double_seasonal"), best
    # the card's 95% intervals: recomputed from the model (onnxruntime) and these baselines
    from export import intervals
    from export.train import model_forecast

    model = model_forecast(default_model_dir / "model.onnx", series)[targets - 1]
    got = intervals.metrics(series.values[targets], model, forecasts, STEPS_PER_DAY)
    want = m["model"]
    assert got["mae_minus_best_baseline"]["baseline"] == want["mae_minus_best_baseline"]["baseline"] == best
    # the same tolerance as the baselines': the difference carries the best baseline's spread
    assert got["mae_ci95"] == pytest.approx(want["mae_ci95"], rel=1e-6)
    assert got["mae_minus_best_baseline"]["ci95"] == pytest.approx(want["mae_minus_best_baseline"]["ci95"], rel=1e-6)
    lo, hi = want["mae_ci95"]
    assert lo < want["mae"] < hi
    d_lo, d_hi = want["mae_minus_best_baseline"]["ci95"]
    assert d_lo < want["mae_minus_best_baseline"]["mae"] < d_hi
