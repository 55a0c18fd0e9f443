"""collate/split are pure: any mix of lengths and states round-trips exactly."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from service.batching.collate import calls, collate, split


def _req(rng, n, t, L=2, H=4, F=3, S=2):
    return rng.normal(size=(n, t, F)).astype(np.float32), rng.normal(size=(S, L, n, H)).astype(np.float32)


def _collate(reqs):
    """One call of the requests, their states gathered as the session store gives them: one array."""
    return collate([r[0] for r in reqs], np.concatenate([r[1] for r in reqs], axis=2))


def test_stack_pad_and_lengths():
    rng = np.random.default_rng(0)
    reqs = [_req(rng, 1, 3), _req(rng, 2, 5), _req(rng, 1, 1)]
    b = _collate(reqs)
    assert b.x.shape == (4, 5, 3) and b.state.shape == (2, 2, 4, 4)
    assert b.lengths.tolist() == [3, 5, 5, 1]
    np.testing.assert_array_equal(b.x[1:3], reqs[1][0])
    np.testing.assert_array_equal(b.x[0, :3], reqs[0][0][0])
    assert not b.x[0, 3:].any() and not b.x[3, 1:].any()
    np.testing.assert_array_equal(b.state[1][:, 1:3], reqs[1][1][1])


def test_equal_lengths_need_no_lengths_input():
    rng = np.random.default_rng(1)
    reqs = [_req(rng, 2, 4), _req(rng, 1, 4)]
    assert _collate(reqs).lengths is None


@pytest.mark.parametrize("seed", range(5))
def test_split_returns_each_requests_rows(seed):
    """Per request its rows, without the padding, whether the state is h and C (an LSTM, seeds
    0-2) or h alone (a GRU, seeds 3-4). (The state input is the batch's, passed through: which
    rows a request runs from is ModelWorker.infer's, tested in test_predict_batching.py.)"""
    rng = np.random.default_rng(seed)
    S = 2 if seed < 3 else 1
    reqs = [_req(rng, int(rng.integers(1, 4)), int(rng.integers(1, 9)), S=S) for _ in range(int(rng.integers(1, 6)))]
    b = _collate(reqs)
    # an identity "model": y = x's first feature
    for (x, _), y in zip(reqs, split(b, b.x[..., :1]), strict=True):
        np.testing.assert_array_equal(y, x[..., :1])


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError):
        collate([], np.zeros((2, 1, 0, 4), np.float32))
    with pytest.raises(ValueError, match="a state row for each"):
        collate([np.zeros((2, 1, 3), np.float32)], np.zeros((2, 1, 1, 4), np.float32))


def test_calls_without_lengths_hold_one_length_each():
    assert calls([3, 1, 3, 2, 1], [1] * 5, None) == [[0, 2], [1, 4], [3]]


def _cost(call: float, row_step: float):
    return lambda rows, steps: call + rows * steps * row_step


def test_one_long_request_gets_a_call_of_its_own_where_padding_costs_more():
    """onnxruntime computes every row of a call to its longest row: 33 readings padded to 8
    steps cost 8x; a second call for the long request costs less (with the default model's
    warm-up figures, about 120 µs a call and 24 µs a row-step)."""
    lengths = [1] * 33 + [8]
    assert calls(lengths, [1] * 34, _cost(120e-6, 24e-6)) == [list(range(33)), [33]]
    # a call dearer than the padding: one call, however the lengths mix
    assert calls([1, 8, 2], [1, 1, 1], _cost(1.0, 24e-6)) == [[0, 2, 1]]
    # equal lengths: one call, in request order
    assert calls([4, 4, 4], [2, 1, 3], _cost(120e-6, 24e-6)) == [[0, 1, 2]]


@pytest.mark.parametrize("seed", range(20))
def test_calls_cost_the_least_of_every_cut_of_the_sorted_lengths(seed):
    """Against brute force: every way to cut the distinct lengths, in order, into calls."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    lengths = [int(t) for t in rng.integers(1, 7, n)]
    rows = [int(r) for r in rng.integers(1, 4, n)]
    cost = _cost(float(rng.uniform(0, 200e-6)), 24e-6)
    got = calls(lengths, rows, cost)
    assert sorted(i for g in got for i in g) == list(range(n))  # every request once

    def total(groups):
        return sum(cost(sum(rows[i] for i in g), max(lengths[i] for i in g)) for g in groups)

    ts = sorted(set(lengths))
    best = min(
        total([[i for i in range(n) if ts[a] <= lengths[i] <= ts[b - 1]] for a, b in itertools.pairwise(cuts)])
        for k in range(len(ts))
        for inner in itertools.combinations(range(1, len(ts)), k)
        for cuts in [(0, *inner, len(ts))]
    )
    assert total(got) == pytest.approx(best)


def test_calls_of_no_request_and_of_unknown_costs():
    """No request, no call; a cost not yet measured (infinite before the warm-up) gives one
    call, as before the calls were chosen."""
    assert calls([], [], _cost(1e-4, 1e-5)) == []
    assert calls([1, 8, 1], [1, 1, 1], lambda rows, steps: math.inf) == [[0, 2, 1]]
