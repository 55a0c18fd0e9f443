"""PNG plots of training: the loss curve and the test-period forecast against actuals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export.data import Series


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(histories: list[list[dict[str, float]]], path: Path) -> None:
    """Training and validation loss per epoch of each ensemble member, best epochs marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for j, history in enumerate(histories):
        epochs = [h["epoch"] for h in history]
        color = plt.cm.tab10(j % 10)
        best = min(history, key=lambda h: h["val_loss"])
        tag = f"member {j}: " if len(histories) > 1 else ""
        ax.plot(
            epochs, [h["train_loss"] for h in history], color=color, lw=0.8, alpha=0.6, label=f"{tag}train (windows)"
        )
        ax.plot(epochs, [h["val_loss"] for h in history], color=color, lw=1.2, label=f"{tag}validation (stateful run)")
        ax.plot([best["epoch"]], [best["val_loss"]], "o", color=color, ms=4)
    ax.set_yscale("log")
    ax.set_xlabel("epoch (dots: best validation epoch, kept)")
    ax.set_ylabel("MSE (head units)")
    ax.set_title("Training loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_forecast(
    series: Series,
    forecast: np.ndarray,
    baselines: dict[str, np.ndarray],
    metrics: dict[str, dict[str, float]],
    path: Path,
) -> None:
    """Two panels: the whole test fortnight, and its first two days up close, with the best baseline."""
    from export.baselines import NAMES

    plt = _plt()
    day = series.steps_per_day
    name, unit = series.feature_info[0]["name"], series.feature_info[0].get("unit", "")
    units = f" {unit}" if unit else ""
    targets = np.arange(series.val_end, series.n)
    days = (targets - series.val_end) / day
    actual = series.values[targets]
    model = forecast[targets - 1]
    best = min(baselines, key=lambda name: metrics[name]["mae"])
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), dpi=100)
    for ax, span in zip(axes, (len(targets), 2 * day), strict=True):
        s = slice(0, span)
        ax.plot(days[s], actual[s], color="black", lw=1.2, label="actual")
        ax.plot(days[s], model[s], color="tab:blue", lw=1, label=f"LSTM (MAE {metrics['model']['mae']:.4g}{units})")
        ax.plot(
            days[s],
            baselines[best][s],
            color="tab:orange",
            lw=0.9,
            alpha=0.8,
            label=f"best baseline: {NAMES[best]} (MAE {metrics[best]['mae']:.4g}{units})",
        )
        ax.set_ylabel(f"{name} ({unit})" if unit else name)
        ax.grid(alpha=0.3)
        low, high = ax.get_ylim()
        ax.set_ylim(low - 0.45 * (high - low), high)  # room for the legend below the night troughs
    if len(targets) > 1:
        s = slice(0, 2 * day)
        axes[1].plot(
            days[s],
            series.values[targets[s] - series.steps_per_week],
            color="tab:green",
            lw=0.8,
            alpha=0.6,
            label=f"seasonal naive, weekly (MAE {metrics['seasonal_naive_weekly']['mae']:.4g}{units})",
        )
    what = "half-hourly, England & Wales" if series.target is None else f"{name}, every {series.frequency_minutes} min"
    axes[0].set_title(f"Test split: one-step-ahead forecasts ({what})")
    axes[1].set_title("First two days of the test split")
    axes[1].set_xlabel("days into the test split")
    for ax in axes:
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
