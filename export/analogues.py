"""What a memory of recent days is worth here: ``python -m export.analogues``.

Simple numpy forecasts of the next reading, on the model card's split (anything fitted uses
train + validation only), that stand for what an LSTM can hold in its state: a fixed
function of the calendar, a memory of the half-hourly change by time of day (one bank, or
one each for weekdays, Saturdays and Sundays), with or without a fixed correction by
(day of week, half hour), or followed by a memory, by half hour of the week, of what the daily
memory missed (the default model's two memories; nothing fitted). docs/model.md quotes their test MAE to explain the model's design.
"""

from __future__ import annotations

import numpy as np

from export.data import STEPS_PER_DAY, STEPS_PER_WEEK, Series, load


def _memory(change: np.ndarray, bank: np.ndarray, decay: tuple[float, ...]) -> np.ndarray:
    """``read[t]``: the weighted mean change at t's half hour in t's bank, from before t;
    bank b forgets at ``decay[b]`` per update."""
    memory = np.zeros((int(bank.max()) + 1, STEPS_PER_DAY))
    read = np.zeros(len(change))
    for t, c in enumerate(change):
        b, s = bank[t], t % STEPS_PER_DAY
        read[t] = memory[b, s]
        memory[b, s] = decay[b] * memory[b, s] + (1 - decay[b]) * c
    return read


def _weekly_memory(values: np.ndarray, decay: float) -> np.ndarray:
    """``read[t]``: the weighted mean of ``values`` at t's half hour of the week, from before t."""
    memory = np.zeros(STEPS_PER_WEEK)
    read = np.zeros(len(values))
    for t, v in enumerate(values):
        read[t] = memory[t % STEPS_PER_WEEK]
        memory[t % STEPS_PER_WEEK] = decay * memory[t % STEPS_PER_WEEK] + (1 - decay) * v
    return read


def analogues(series: Series, decay: float = 0.7) -> dict[str, float]:
    """Test MAE (MW) of each analogue; ``change[t] = y[t+1] - y[t]`` is forecast at t."""
    y = series.values
    change = np.diff(y)
    t = np.arange(len(change))
    week_slot = t % STEPS_PER_WEEK
    fit = (t >= 2 * STEPS_PER_WEEK) & (t < series.val_end - 1)  # memories warmed up; train + validation
    test = np.arange(series.val_end - 1, len(change))

    def mae(forecast_change: np.ndarray) -> float:
        return float(np.mean(np.abs(y[test] + forecast_change[test] - y[test + 1])))

    def by_week_slot(values: np.ndarray) -> np.ndarray:
        return np.array([values[fit & (week_slot == k)].mean() for k in range(STEPS_PER_WEEK)])[week_slot]

    day = (t // STEPS_PER_DAY) % 7
    one_bank = _memory(change, np.zeros_like(t), (decay,))
    corrected = one_bank + by_week_slot(change - one_bank)
    # Taylor's AR(1) adjustment: the last one-step error times phi (least squares on the fitting part)
    last_error = np.r_[0.0, (change - corrected)[:-1]]
    phi = float(np.sum(last_error[fit] * (change - corrected)[fit]) / np.sum(last_error[fit] ** 2))
    # Saturdays and Sundays come once a week: their memories forget faster
    three_banks = _memory(change, np.where(day < 5, 0, day - 4), (decay, 0.3, 0.3))
    return {
        "fixed mean change by (day of week, half hour)": mae(by_week_slot(change)),
        "the change one week earlier": mae(np.r_[np.zeros(STEPS_PER_WEEK), change[:-STEPS_PER_WEEK]]),
        "daily memory": mae(one_bank),
        "daily memory + fixed correction": mae(corrected),
        "daily memory + fixed correction + AR(1) of its last error": mae(corrected + phi * last_error),
        "three daily memories (weekdays 0.7, Saturdays 0.3, Sundays 0.3)": mae(three_banks),
        "three daily memories + fixed correction": mae(three_banks + by_week_slot(change - three_banks)),
        # nothing fitted: what the daily memory missed, remembered by half hour of the week
        "daily memory + weekly memory of what it missed": mae(one_bank + _weekly_memory(change - one_bank, decay)),
    }


def two_memories(series: Series, daily: float = 0.7, weekly: float = 0.7) -> dict[str, float]:
    """Validation and test MAE (MW) of the daily memory + the weekly memory of what it missed."""
    y = series.values
    change = np.diff(y)
    one_bank = _memory(change, np.zeros(len(change), dtype=int), (daily,))
    forecast = y[:-1] + one_bank + _weekly_memory(change - one_bank, weekly)  # forecast[t] of y[t + 1]
    val = np.arange(series.train_end, series.val_end)
    test = np.arange(series.val_end, series.n)
    return {
        "validation": float(np.mean(np.abs(forecast[val - 1] - y[val]))),
        "test": float(np.mean(np.abs(forecast[test - 1] - y[test]))),
    }


def main() -> None:
    series = load("taylor")
    for name, value in analogues(series).items():
        print(f"{value:8.1f}  {name}")
    print("daily memory 0.7 + weekly memory of what it missed, by the weekly memory's decay:")
    for weekly in (0.5, 0.6, 0.7, 0.8):
        m = two_memories(series, weekly=weekly)
        print(f"{weekly:8.1f}  validation {m['validation']:.1f}  test {m['test']:.1f}")


if __name__ == "__main__":
    main()
