"""Naive one-step-ahead forecasts the model must beat, and the error measures."""

from __future__ import annotations

import numpy as np


def persistence(values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Forecast y[t] as the last reading y[t-1], for each target index t."""
    return values[targets - 1]


def seasonal_naive(values: np.ndarray, targets: np.ndarray, period: int) -> np.ndarray:
    """Forecast y[t] as the reading one season earlier, y[t - period]."""
    if np.any(targets - period < 0):
        raise ValueError(f"targets start before one full season ({period} steps) of history")
    return values[targets - period]


def errors(actual: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    diff = np.asarray(forecast, np.float64) - np.asarray(actual, np.float64)
    return {
        "mae": float(np.mean(np.abs(diff))),
        "rmse": float(np.sqrt(np.mean(diff**2))),
    }
