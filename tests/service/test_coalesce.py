"""The one rule for running a stream's queued steps together (service/core/coalesce.py), which
WebSocket frames and ModelStreamInfer messages follow."""

from __future__ import annotations

import numpy as np

from harness.paths import DEFAULT_MODEL
from service.core.coalesce import Part, Run, plain
from service.runtime.repository import read_card


def rows(n: int, f: int = 3) -> np.ndarray:
    return np.arange(n * f, dtype=np.float32).reshape(n, f)


def test_a_run_takes_steps_in_order_within_the_limit_and_splits_outputs_and_steps() -> None:
    run = Run(max_steps=6)
    assert run.add(Part(rows(2), start=True))
    assert run.add(Part(rows(3)))
    assert not run.add(Part(rows(2)))  # 7 readings: over the limit, it starts the next run
    assert not run.add(Part(rows(1), start=True))  # a start only opens a run
    assert not run.add(Part(rows(1, f=4)))  # another width
    assert run.add(Part(rows(1), end=True))
    assert not run.add(Part(rows(1)))  # the sequence ended
    assert run.x.shape == (6, 3) and run.steps == 6
    y = np.arange(6, dtype=np.float32)[:, None]
    parts = run.split(y, step=16)  # the session is at step 16 after the run
    assert [step for _, step in parts] == [12, 15, 16]
    assert [out[:, 0].tolist() for out, _ in parts] == [[0, 1], [2, 3, 4], [5]]


def test_a_first_request_longer_than_the_limit_still_opens_its_run() -> None:
    run = Run(max_steps=2)
    assert run.add(Part(rows(5)))  # alone it is refused by the data plane with its own message
    assert not run.add(Part(rows(1)))


def test_plain_steps_are_those_the_card_accepts_alone() -> None:
    card = read_card(DEFAULT_MODEL)
    ok = np.asarray([[30500.0, 8.0, 2.0], [30600.0, 8.5, 2.0]], np.float32)
    assert plain(card, ok, 100)
    off_grid = ok.copy()
    off_grid[1, 1] = 8.25
    assert not plain(card, off_grid, 100)
    assert not plain(card, ok, 1)  # more readings than a request may carry
    assert not plain(card, ok[:, :2], 100)
