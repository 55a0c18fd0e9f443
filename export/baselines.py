"""The classical one-step-ahead forecasts the model must beat, and the error measures.

Every forecaster here is scored the same way as the model: its parameters are fitted on
the readings before ``fit_end`` (train + validation), then it runs over the whole series
with those parameters fixed, its state updated by each reading, and ``forecast[t]`` is
the forecast of reading ``t`` made after reading ``t - 1``.

* persistence and seasonal naive (the last reading, the reading a season earlier);
* Holt-Winters exponential smoothing with additive seasonality, daily (48) or weekly
  (336), without or with an additive trend: ``statsmodels``' ``ExponentialSmoothing``,
  fitted by its default (maximum likelihood, estimated initial states);
* double seasonal Holt-Winters (Taylor 2003, J. Oper. Res. Soc. 54: 799-805), written
  here because no maintained Python library implements it: a level, an optional trend, a
  daily and a weekly seasonal index, and Taylor's AR(1) adjustment of the forecast by
  the last one-step error. Its five parameters minimise the one-step mean squared error
  over the fitting part (L-BFGS-B from a fixed start: deterministic).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


def persistence(values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Forecast y[t] as the last reading y[t-1], for each target index t."""
    return values[targets - 1]


def seasonal_naive(values: np.ndarray, targets: np.ndarray, period: int) -> np.ndarray:
    """Forecast y[t] as the reading one season earlier, y[t - period]."""
    if np.any(targets - period < 0):
        raise ValueError(f"targets start before one full season ({period} steps) of history")
    return values[targets - period]


def holt_winters(values: np.ndarray, fit_end: int, period: int, trend: bool = False) -> np.ndarray:
    """One-step forecasts of every reading by additive Holt-Winters (``statsmodels``).

    Fitted on ``values[:fit_end]``; then the same parameters and initial states run over
    the whole series (``initialization_method="known"``, ``optimized=False``), so
    ``forecast[t]`` for ``t >= fit_end`` uses readings up to ``t - 1`` and nothing after.
    """
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    kind = "add" if trend else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter from the optimiser
        fitted = ExponentialSmoothing(
            values[:fit_end], trend=kind, seasonal="add", seasonal_periods=period, initialization_method="heuristic"
        ).fit()
        p = fitted.params
        initial = {"initial_level": p["initial_level"], "initial_seasonal": p["initial_seasons"]}
        smoothing = {"smoothing_level": p["smoothing_level"], "smoothing_seasonal": p["smoothing_seasonal"]}
        if trend:
            initial["initial_trend"] = p["initial_trend"]
            smoothing["smoothing_trend"] = p["smoothing_trend"]
        run = ExponentialSmoothing(
            values, trend=kind, seasonal="add", seasonal_periods=period, initialization_method="known", **initial
        ).fit(optimized=False, **smoothing)
    return np.asarray(run.fittedvalues, np.float64)


@dataclass(frozen=True)
class DoubleSeasonal:
    """Taylor's double seasonal Holt-Winters: the fitted parameters and initial states."""

    alpha: float  # level
    gamma: float  # trend
    delta: float  # daily index
    omega: float  # weekly index
    phi: float  # AR(1) adjustment by the last one-step error
    level: float
    trend: float
    daily: np.ndarray  # [s1]
    weekly: np.ndarray  # [s2]
    multiplicative: bool

    def forecast(self, values: np.ndarray) -> np.ndarray:
        """One-step forecasts of every reading: ``forecast[t]`` uses readings before ``t``."""
        return _dshw_filter(values, self)


def _dshw_initial(values: np.ndarray, s1: int, s2: int, multiplicative: bool, trend: bool) -> tuple:
    """Initial states from the first two weeks: level = week 1 mean, trend from week 2 - week 1,
    daily index = mean daily profile around each day's mean, weekly index = what remains."""
    if len(values) < 2 * s2:
        raise ValueError(f"double seasonal initial states need two weekly seasons ({2 * s2} readings)")
    days = values[: 2 * s2].reshape(-1, s1)
    day_mean = days.mean(axis=1, keepdims=True)
    level = float(values[:s2].mean())
    slope = float(values[s2 : 2 * s2].mean() - level) / s2 if trend else 0.0
    if multiplicative:
        daily = (days / day_mean).mean(axis=0)
        weekly = (days / day_mean / daily).reshape(2, s2).mean(axis=0)
    else:
        daily = (days - day_mean).mean(axis=0)
        weekly = (days - day_mean - daily).reshape(2, s2).mean(axis=0)
    return level, slope, daily, weekly


def _dshw_filter(values: np.ndarray, m: DoubleSeasonal) -> np.ndarray:
    # plain Python floats: the recursion is sequential, and this is ~10x faster than numpy scalars
    a, g, d, w, phi = m.alpha, m.gamma, m.delta, m.omega, m.phi
    level, slope = m.level, m.trend
    daily, weekly = m.daily.tolist(), m.weekly.tolist()
    s1, s2 = len(daily), len(weekly)
    out = np.empty(len(values))
    err = 0.0
    for t, y in enumerate(np.asarray(values, np.float64).tolist()):
        i, k = t % s1, t % s2
        base = level + slope
        if m.multiplicative:
            raw = base * daily[i] * weekly[k]
            new_level = a * y / (daily[i] * weekly[k]) + (1 - a) * base
            new_daily = d * y / (new_level * weekly[k]) + (1 - d) * daily[i]
            new_weekly = w * y / (new_level * daily[i]) + (1 - w) * weekly[k]
        else:
            raw = base + daily[i] + weekly[k]
            new_level = a * (y - daily[i] - weekly[k]) + (1 - a) * base
            new_daily = d * (y - new_level - weekly[k]) + (1 - d) * daily[i]
            new_weekly = w * (y - new_level - daily[i]) + (1 - w) * weekly[k]
        out[t] = raw + phi * err
        err = y - raw
        slope = g * (new_level - level) + (1 - g) * slope
        level, daily[i], weekly[k] = new_level, new_daily, new_weekly
    return out


def fit_double_seasonal(
    values: np.ndarray,
    fit_end: int,
    s1: int,
    s2: int,
    multiplicative: bool = True,
    trend: bool = True,
) -> DoubleSeasonal:
    """Fit Taylor's method on ``values[:fit_end]`` by least squares of the one-step errors."""
    from scipy.optimize import minimize

    if s2 % s1:
        raise ValueError("the weekly period must be a multiple of the daily one")
    level, slope, daily, weekly = _dshw_initial(values[:fit_end], s1, s2, multiplicative, trend)
    fit_part = np.asarray(values[:fit_end], np.float64)

    def model(p: np.ndarray) -> DoubleSeasonal:
        g = float(p[1]) if trend else 0.0
        return DoubleSeasonal(
            float(p[0]), g, float(p[2]), float(p[3]), float(p[4]), level, slope, daily, weekly, multiplicative
        )

    def mse(p: np.ndarray) -> float:
        return float(np.mean((_dshw_filter(fit_part, model(p)) - fit_part) ** 2))

    bounds = [(0.0, 1.0)] * 4 + [(-1.0, 1.0)]
    res = minimize(mse, x0=np.array([0.1, 0.01, 0.1, 0.1, 0.5]), method="L-BFGS-B", bounds=bounds)
    return model(res.x)


# name -> what the model card and the docs call it
NAMES = {
    "persistence": "persistence (last reading)",
    "seasonal_naive_daily": "seasonal naive, daily",
    "seasonal_naive_weekly": "seasonal naive, weekly",
    "holt_winters_daily": "Holt-Winters, additive, daily season",
    "holt_winters_weekly": "Holt-Winters, additive, weekly season",
    "holt_winters_daily_trend": "Holt-Winters, additive, daily season + trend",
    "holt_winters_weekly_trend": "Holt-Winters, additive, weekly season + trend",
    "double_seasonal_additive": "double seasonal HW (Taylor), additive, AR(1)",
    "double_seasonal_taylor": "double seasonal HW (Taylor), multiplicative, trend, AR(1)",
}


def forecasts(values: np.ndarray, fit_end: int, targets: np.ndarray, s1: int, s2: int) -> dict[str, np.ndarray]:
    """Every baseline's one-step forecasts of ``values[targets]``, keyed as in :data:`NAMES`."""
    if np.any(targets < fit_end):
        raise ValueError("targets must lie after the fitting part")
    out = {
        "persistence": persistence(values, targets),
        "seasonal_naive_daily": seasonal_naive(values, targets, s1),
        "seasonal_naive_weekly": seasonal_naive(values, targets, s2),
    }
    for period, name in ((s1, "daily"), (s2, "weekly")):
        out[f"holt_winters_{name}"] = holt_winters(values, fit_end, period)[targets]
        out[f"holt_winters_{name}_trend"] = holt_winters(values, fit_end, period, trend=True)[targets]
    additive = fit_double_seasonal(values, fit_end, s1, s2, multiplicative=False, trend=False)
    out["double_seasonal_additive"] = additive.forecast(values)[targets]
    taylor = fit_double_seasonal(values, fit_end, s1, s2, multiplicative=True, trend=True)
    out["double_seasonal_taylor"] = taylor.forecast(values)[targets]
    return out


def errors(actual: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    diff = np.asarray(forecast, np.float64) - np.asarray(actual, np.float64)
    return {
        "mae": float(np.mean(np.abs(diff))),
        "rmse": float(np.sqrt(np.mean(diff**2))),
    }
