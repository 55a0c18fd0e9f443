"""The value checks on decoded arrays: the loop for a few values and the vectorised checks agree."""

from __future__ import annotations

import numpy as np

from harness.paths import DEFAULT_MODEL
from service.core import inputs
from service.errors import InvalidInput
from service.runtime.repository import read_card


def on_grid(card, x: np.ndarray) -> bool:
    try:
        inputs.check_grid(card, x, "x")
    except InvalidInput:
        return False
    return True


def test_the_small_and_the_vectorised_tests_agree_on_every_kind_of_value():
    card = read_card(DEFAULT_MODEL)
    lo, hi = card.bounds
    rng = np.random.default_rng(0)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -1.0], np.float32)
    checked = {True: 0, False: 0}
    for _ in range(2000):
        t = int(rng.integers(1, 6))
        x = (lo + (hi - lo) * rng.uniform(-0.05, 1.05, size=(t, lo.size))).astype(np.float32)
        if rng.random() < 0.7:  # the grid features on their grid, mostly
            for i, origin, step in card.grids:
                x[:, i] = origin + step * np.round((x[:, i] - origin) / step)
        if rng.random() < 0.5:  # bounds exactly, or a special value somewhere
            x[rng.integers(t), rng.integers(lo.size)] = rng.choice(np.concatenate([lo, hi, specials]))
        vectorised = inputs.within(card, x) and on_grid(card, x)
        assert x.size <= inputs.SMALL  # the loop is what is tested here
        assert inputs.small_ok(card, x) is vectorised, x
        checked[vectorised] += 1
    assert min(checked.values()) > 200  # both outcomes were exercised
    big = np.tile(lo, (inputs.SMALL, 1))  # past SMALL values: the vectorised checks decide
    assert not inputs.small_ok(card, big) and inputs.within(card, big) and on_grid(card, big)
