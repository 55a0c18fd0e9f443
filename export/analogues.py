"""What a memory of recent days is worth here, and the memories' decays, chosen on
validation only: ``python -m export.analogues``.

Simple numpy forecasts of the next reading that stand for what an LSTM can hold in its
state: a fixed function of the calendar, a memory of the half-hourly change by time of day
(one bank, or one each for weekdays, Saturdays and Sundays), with or without a fixed
correction by (day of week, half hour), or followed by a memory, by half hour of the week, of
what the daily memory missed (the default model's two memories, which the LSTM's built
units compute exactly; nothing fitted).

**Selection protocol** (the test split is never read here): rolling origin over the
training and validation weeks. Weeks 0 and 1 warm the memories up (training windows skip
them too, ``--warm-from 2``); each week k from 3 to the last validation week is scored
one step ahead, with anything fitted (a correction, an AR(1) coefficient) fitted on weeks
2 .. k-1 only, so every score is out of sample. A candidate's figure is the mean absolute
error over those weeks. The decays of the two memories are chosen as the grid point
with the lowest figure (:func:`select`); ``export.train``'s defaults are that choice, which
``tests/export/test_analogues.py`` checks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from export.data import STEPS_PER_DAY, STEPS_PER_WEEK, Series, load

WARM_WEEKS = 2  # weeks that fill the memories before anything is scored (as --warm-from)
DECAYS = (0.5, 0.6, 0.7, 0.8, 0.9)  # the grid both memories' decays are chosen from
# what select() chooses on the committed series (tests/export/test_analogues.py checks it):
# export.train's defaults
DAILY_DECAY, WEEKLY_DECAY = 0.7, 0.6


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


def folds(series: Series) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rolling origin: per scored week k, ``(fit, score)`` -- indices t of forecasts (of
    ``y[t + 1]``) to fit on (weeks WARM_WEEKS .. k-1) and to score (week k); only targets
    before the test split."""
    weeks = series.val_end // STEPS_PER_WEEK
    out = []
    for k in range(WARM_WEEKS + 1, weeks):
        fit = np.arange(WARM_WEEKS * STEPS_PER_WEEK, k * STEPS_PER_WEEK) - 1
        score = np.arange(k * STEPS_PER_WEEK, min((k + 1) * STEPS_PER_WEEK, series.val_end)) - 1
        out.append((fit, score))
    return out


def rolling_mae(series: Series, forecast_change: Callable[[np.ndarray], np.ndarray]) -> float:
    """Mean absolute error over the rolling-origin folds of ``current reading +
    forecast_change(fit)[t]``, where ``forecast_change`` may fit on the indices it is given."""
    y = series.values
    errors = []
    for fit, score in folds(series):
        change = forecast_change(fit)
        errors.append(np.abs(y[score] + change[score] - y[score + 1]))
    return float(np.mean(np.concatenate(errors)))


def analogues(series: Series, decay: float = DAILY_DECAY, weekly: float = WEEKLY_DECAY) -> dict[str, float]:
    """Rolling-origin validation MAE (MW) of each analogue; ``change[t] = y[t+1] - y[t]`` is
    forecast at t."""
    y = series.values
    change = np.diff(y)
    t = np.arange(len(change))
    week_slot = t % STEPS_PER_WEEK

    def by_week_slot(values: np.ndarray, fit: np.ndarray) -> np.ndarray:
        means = np.zeros(STEPS_PER_WEEK)
        for k in range(STEPS_PER_WEEK):
            at = fit[week_slot[fit] == k]
            means[k] = values[at].mean() if at.size else 0.0
        return means[week_slot]

    day = (t // STEPS_PER_DAY) % 7
    one_bank = _memory(change, np.zeros_like(t), (decay,))
    # Saturdays and Sundays come once a week: their memories forget faster
    three_banks = _memory(change, np.where(day < 5, 0, day - 4), (decay, 0.3, 0.3))

    def with_ar1(fit: np.ndarray) -> np.ndarray:
        # Taylor's AR(1) adjustment: the last one-step error times phi (least squares on the fit weeks)
        corrected = one_bank + by_week_slot(change - one_bank, fit)
        last_error = np.r_[0.0, (change - corrected)[:-1]]
        phi = float(np.sum(last_error[fit] * (change - corrected)[fit]) / np.sum(last_error[fit] ** 2))
        return corrected + phi * last_error

    return {
        "fixed mean change by (day of week, half hour)": rolling_mae(series, lambda f: by_week_slot(change, f)),
        "the change one week earlier": rolling_mae(
            series, lambda f: np.r_[np.zeros(STEPS_PER_WEEK), change[:-STEPS_PER_WEEK]]
        ),
        "daily memory": rolling_mae(series, lambda f: one_bank),
        "daily memory + fixed correction": rolling_mae(series, lambda f: one_bank + by_week_slot(change - one_bank, f)),
        "daily memory + fixed correction + AR(1) of its last error": rolling_mae(series, with_ar1),
        "three daily memories (weekdays 0.7, Saturdays 0.3, Sundays 0.3)": rolling_mae(series, lambda f: three_banks),
        "three daily memories + fixed correction": rolling_mae(
            series, lambda f: three_banks + by_week_slot(change - three_banks, f)
        ),
        # nothing fitted: what the daily memory missed, remembered by half hour of the week
        "daily memory + weekly memory of what it missed": two_memories(series, decay, weekly),
    }


def two_memories(series: Series, daily: float, weekly: float) -> float:
    """Rolling-origin validation MAE (MW) of the daily memory + the weekly memory of what it missed."""
    change = np.diff(series.values)
    one_bank = _memory(change, np.zeros(len(change), dtype=int), (daily,))
    forecast = one_bank + _weekly_memory(change - one_bank, weekly)
    return rolling_mae(series, lambda f: forecast)


def select(series: Series) -> tuple[tuple[float, float], dict[tuple[float, float], float]]:
    """The (daily, weekly) decays with the lowest rolling-origin validation MAE over the grid,
    and every grid point's figure."""
    grid = {(d, w): two_memories(series, d, w) for d in DECAYS for w in DECAYS}
    return min(grid, key=lambda k: grid[k]), grid


def main() -> None:
    series = load("taylor")
    print("rolling-origin validation MAE (MW), weeks 3-9 (each scored with only the weeks before it):")
    for name, value in analogues(series).items():
        print(f"{value:8.1f}  {name}")
    chosen, grid = select(series)
    print("\ndaily memory + weekly memory of what it missed, by decay (rows: daily; columns: weekly):")
    print("| daily \\ weekly | " + " | ".join(f"{w:g}" for w in DECAYS) + " |")
    print("|---|" + "---:|" * len(DECAYS))
    for d in DECAYS:
        cells = [f"**{grid[d, w]:.1f}**" if (d, w) == chosen else f"{grid[d, w]:.1f}" for w in DECAYS]
        print(f"| {d:g} | " + " | ".join(cells) + " |")
    print(f"\nchosen: daily {chosen[0]:g}, weekly {chosen[1]:g}")


if __name__ == "__main__":
    main()
