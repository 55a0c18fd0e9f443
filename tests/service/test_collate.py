"""collate/split are pure: any mix of lengths and states round-trips exactly."""

from __future__ import annotations

import numpy as np
import pytest

from service.batching.collate import collate, group_by_length, split


def _req(rng, n, t, L=2, H=4, F=3, S=2):
    return rng.normal(size=(n, t, F)).astype(np.float32), rng.normal(size=(S, L, n, H)).astype(np.float32)


def test_stack_pad_and_lengths():
    rng = np.random.default_rng(0)
    reqs = [_req(rng, 1, 3), _req(rng, 2, 5), _req(rng, 1, 1)]
    b = collate([r[0] for r in reqs], [r[1] for r in reqs])
    assert b.x.shape == (4, 5, 3) and b.state.shape == (2, 2, 4, 4)
    assert b.lengths.tolist() == [3, 5, 5, 1]
    np.testing.assert_array_equal(b.x[1:3], reqs[1][0])
    np.testing.assert_array_equal(b.x[0, :3], reqs[0][0][0])
    assert not b.x[0, 3:].any() and not b.x[3, 1:].any()
    np.testing.assert_array_equal(b.state[1][:, 1:3], reqs[1][1][1])


def test_equal_lengths_need_no_lengths_input():
    rng = np.random.default_rng(1)
    reqs = [_req(rng, 2, 4), _req(rng, 1, 4)]
    assert collate([r[0] for r in reqs], [r[1] for r in reqs]).lengths is None


@pytest.mark.parametrize("seed", range(5))
def test_split_returns_each_requests_rows(seed):
    """Per request its rows and its state, whether the state is h and C (an LSTM, seeds 0-2) or
    h alone (a GRU, seeds 3-4)."""
    rng = np.random.default_rng(seed)
    S = 2 if seed < 3 else 1
    reqs = [_req(rng, int(rng.integers(1, 4)), int(rng.integers(1, 9)), S=S) for _ in range(int(rng.integers(1, 6)))]
    b = collate([r[0] for r in reqs], [r[1] for r in reqs])
    # an identity "model": y = x's first feature, state passes through
    parts = split(b, b.x[..., :1], b.state)
    for (x, state), (y, st) in zip(reqs, parts, strict=True):
        np.testing.assert_array_equal(y, x[..., :1])
        np.testing.assert_array_equal(st, state)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError):
        collate([], [])


def test_group_by_length():
    assert group_by_length([3, 1, 3, 2, 1]) == [[0, 2], [1, 4], [3]]
