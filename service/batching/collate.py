"""Pure functions that stack requests into one onnxruntime call and split the results.

Each request contributes ``n`` rows of the same length ``T``: ``x [n, T, F]``, and the
batch's state input holds every request's rows in order, ``[S, L, rows, H]`` (the card's
state tensors stacked on the first axis: h and C for an LSTM, h for a GRU; the session
store gathers it in one copy). Rows of different requests may have different lengths:
they are zero-padded to the longest and their lengths passed to the model, which then gives
every row its own exact final state. Outputs at padded positions are dropped by
:func:`split`. Which requests share a call is :func:`calls`'s choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

import numpy as np


@dataclass
class Batch:
    x: np.ndarray  # [B, Tmax, F]
    state: np.ndarray  # [S, L, B, H]
    lengths: np.ndarray | None  # [B] int32, None when every row has the same length
    rows: list[tuple[int, int, int]]  # per request: (first row, row count, length)


def collate(xs: list[np.ndarray], state: np.ndarray) -> Batch:
    """One call of the requests ``xs``, from ``state``: their rows' states, in order."""
    n_rows = [x.shape[0] for x in xs]
    if not xs or state.shape[2] != sum(n_rows):
        raise ValueError("collate needs at least one request, and a state row for each of their rows")
    state = np.ascontiguousarray(state)
    if len(xs) == 1:  # a batch of one request (every batch when requests come one at a time)
        x = xs[0]
        return Batch(np.ascontiguousarray(x), state, None, [(0, x.shape[0], x.shape[1])])
    lens = [x.shape[1] for x in xs]
    T = max(lens)
    lengths = None
    if min(lens) == T:
        x = np.concatenate(xs)  # one concatenation, whatever the number of requests
    else:
        x = np.zeros((sum(n_rows), T, xs[0].shape[2]), np.float32)
        r = 0
        for xi, n, t in zip(xs, n_rows, lens, strict=True):
            x[r : r + n, :t] = xi
            r += n
        lengths = np.repeat(np.asarray(lens, np.int32), n_rows)
    firsts = [0, *accumulate(n_rows)][:-1]
    rows = list(zip(firsts, n_rows, lens, strict=True))
    return Batch(x=x, state=state, lengths=lengths, rows=rows)


def split(batch: Batch, y: np.ndarray) -> list[np.ndarray]:
    """Per request its outputs ``y [n, T, O]``: views into the call's, without the padding (a
    caller copies what it keeps). The new states stay one array, row for row as the input."""
    return [y[r : r + n, :t] for r, n, t in batch.rows]


def calls(lengths: list[int], rows: list[int], cost: Callable[[int, int], float] | None) -> list[list[int]]:
    """Requests' indices grouped into onnxruntime calls, for requests of ``rows`` rows of
    ``lengths`` time steps each.

    ``cost(rows, steps)``: what one call costs (the warm-up's estimate); None for a model
    that takes no per-row lengths, whose calls each hold one length (in order of first
    appearance). A model with lengths takes rows of any lengths in one call, but
    onnxruntime computes every row of a call to its longest row's length: one reading
    padded to 8 costs as much as 8. So requests sorted by length are cut into the calls
    whose estimated costs add up to the least (a second call where the padding it saves
    costs more than the call)."""
    if not lengths:
        return []
    first = lengths[0]
    if all(t == first for t in lengths):
        return [list(range(len(lengths)))]
    by_length: dict[int, list[int]] = {}
    for i, t in enumerate(lengths):
        by_length.setdefault(t, []).append(i)
    if cost is None:
        return list(by_length.values())
    ts = sorted(by_length)
    n = [sum(rows[i] for i in by_length[t]) for t in ts]
    # best[j]: the least cost of calls for the j shortest lengths; cut[j]: where the last call
    # begins. The last call's cost grows as it takes in shorter lengths: once it alone costs
    # more than the best, no longer last call can do better. On a tie, fewer calls.
    best, cut = [0.0] * (len(ts) + 1), [0] * (len(ts) + 1)
    for j in range(1, len(ts) + 1):
        best[j], r = math.inf, 0
        for i in range(j - 1, -1, -1):
            r += n[i]
            last = cost(r, ts[j - 1])
            if last > best[j]:
                break
            if best[i] + last <= best[j]:
                best[j], cut[j] = best[i] + last, i
    groups, j = [], len(ts)
    while j:
        i = cut[j]
        groups.append([k for t in ts[i:j] for k in by_length[t]])
        j = i
    return groups[::-1]
