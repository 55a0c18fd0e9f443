"""The numpy analogues and the decay grid docs/model.md quotes are what ``python -m
export.analogues`` computes on validation only, and ``export.train``'s defaults are its choice."""

from __future__ import annotations

import numpy as np

from export.analogues import DAILY_DECAY, WEEKLY_DECAY, analogues, folds, select
from export.data import load
from tests.conftest import ROOT


def test_docs_quote_the_analogues():
    docs = (ROOT / "docs" / "model.md").read_text()
    values = analogues(load("taylor"))
    assert len(values) == 8
    for name, mae in values.items():
        assert f"| {mae:.1f} |" in docs, (name, mae)
    # the memory is what matters: with a fixed correction it beats the calendar alone
    assert values["daily memory + fixed correction"] < 0.85 * values["fixed mean change by (day of week, half hour)"]
    # and the weekly memory of its misses, nothing fitted, beats every fixed correction
    assert values["daily memory + weekly memory of what it missed"] < min(
        values["daily memory + fixed correction"], values["three daily memories + fixed correction"]
    )


def test_the_decays_are_chosen_on_validation_only_and_are_the_training_defaults():
    from export.train import parse_args

    series = load("taylor")
    chosen, grid = select(series)
    assert chosen == (DAILY_DECAY, WEEKLY_DECAY)
    args = parse_args([])
    assert (args.daily_memory, args.weekly_memory) == chosen
    docs = (ROOT / "docs" / "model.md").read_text()
    assert f"**{grid[chosen]:.1f}**" in docs
    for value in grid.values():
        assert f"{value:.1f}" in docs
    # no fold reaches the test split: every scored target lies before it, every fit before its fold
    for fit, score in folds(series):
        assert score.max() + 1 < series.val_end and fit.max() < score.min()
    # and nothing the selection reads changes when the test split does
    changed = load("taylor")
    changed.values[series.val_end :] = np.random.default_rng(0).normal(size=series.n - series.val_end)
    assert select(changed) == (chosen, grid)
