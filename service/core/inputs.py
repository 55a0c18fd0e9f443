"""The one place a request's arrays are checked against the model and the limits.

Transports decode bytes into float32 arrays (:mod:`service.api.protocol.decode`); the data plane
calls these before anything touches a session, so a refused request changes nothing.
"""

from __future__ import annotations

import numpy as np

from service.errors import InvalidInput
from service.runtime.repository import ModelCard


def _features(card: ModelCard) -> str:
    return ", ".join(card.feature_names) or "see the model card"


def check_finite(x: np.ndarray, field: str) -> None:
    if not np.isfinite(x).all():
        raise InvalidInput(f"{field} holds NaN or infinite values (or numbers too large for float32)")


SMALL = 16  # values: up to this many, a Python loop costs less than numpy's per-call overhead


def within(card: ModelCard, x: np.ndarray) -> bool:
    """``lo <= x <= hi`` for every value, feature by feature; NaN and infinities fail it too
    (a feature without a range is bounded by the largest float32)."""
    lo, hi = card.bounds
    return bool(((x >= lo) & (x <= hi)).all())


GRID_TOLERANCE = 1e-4  # of a grid step: float32 readings of 8.5 or 3.0 are exact; 8.25 is 0.5 off


def small_ok(card: ModelCard, x: np.ndarray) -> bool:
    """For a few values (one reading per request is the common case, and a Python loop costs
    less than numpy's calls there): True when every value is within its feature's range and
    on its grid. False decides nothing: the checks below then find and name the bad value."""
    checks = card.value_checks
    if x.size > SMALL or x.shape[-1] != len(checks):
        return False
    for row in x.reshape(-1, len(checks)).tolist():
        for v, (lo, hi, origin, step) in zip(row, checks, strict=False):  # equal lengths: reshaped
            if not lo <= v <= hi:  # NaN fails this too
                return False
            if step:
                k = (v - origin) / step
                if abs(k - round(k)) > GRID_TOLERANCE:
                    return False
    return True


def check_grid(card: ModelCard, x: np.ndarray, field: str) -> None:
    """Each feature whose card declares a grid (``step``) on it: ``min + k * step``. The model
    reads such features exactly (an hour between half hours reads and updates no memory)."""
    for i, origin, step in card.grids:
        k = (x[..., i].astype(np.float64) - origin) / step
        off = np.abs(k - np.round(k)) > GRID_TOLERANCE
        if off.any():
            at = tuple(int(a) for a in np.argwhere(off)[0])
            where = at[0] if len(at) == 1 else list(at)
            grid = f"a multiple of {step:g}" if origin == 0 else f"{origin:g} plus a multiple of {step:g}"
            raise InvalidInput(
                f"{field}: {card.feature_names[i]} must be {grid} (the model card's grid); got "
                f"{float(x[(*at, i)]):g} at {'time step' if x.ndim == 2 else '[sequence, time step]'} {where}"
            )


def check_values(card: ModelCard, x: np.ndarray, field: str) -> None:
    """Every value finite, each feature within the range its model card declares (features
    without one: any finite value), and on its grid where the card declares one."""
    if small_ok(card, x):
        return
    if within(card, x):
        if card.grids:
            check_grid(card, x, field)
        return
    lo, hi = card.bounds
    check_finite(x, field)
    bad = (x < lo) | (x > hi)
    at = tuple(int(a) for a in np.argwhere(bad)[0])
    i = at[-1]
    low, high = card.feature_ranges[i] or (-np.inf, np.inf)
    unit = f" {card.feature_units[i]}" if card.feature_units[i] else ""
    where = at[0] if len(at) == 2 else list(at[:-1])
    raise InvalidInput(
        f"{field}: {card.feature_names[i]} must be within [{low:g}, {high:g}]{unit} (the model card's range); "
        f"got {float(x[at]):g} at {'time step' if x.ndim == 2 else '[sequence, time step]'} {where}"
    )


def check_steps(card: ModelCard, x: np.ndarray, field: str, max_steps: int) -> None:
    """``x [T, F]``: one stream's time steps."""
    if x.size == 0:
        raise InvalidInput(f"{field} must hold 1 to {max_steps} time steps; got none")
    if x.ndim != 2 or x.shape[1] != card.n_features:
        raise InvalidInput(
            f"{field} must be a list of time steps, each a list of {card.n_features} features "
            f"({_features(card)}); got shape {list(x.shape)}"
        )
    if not 1 <= x.shape[0] <= max_steps:
        raise InvalidInput(f"{field} must hold 1 to {max_steps} time steps; got {x.shape[0]}")
    check_values(card, x, field)


def check_sequences(card: ModelCard, x: np.ndarray, field: str, max_sequences: int, max_steps: int) -> None:
    """``x [n, T, F]``: whole sequences for a stateless predict."""
    if x.ndim == 3 and x.size == 0 and x.shape[0] and not x.shape[1]:
        raise InvalidInput(f"each sequence must hold 1 to {max_steps} time steps; got none")
    if x.ndim != 3 or x.shape[2] != card.n_features:
        raise InvalidInput(
            f"{field} must be [batch, seq, {card.n_features}]: a list of sequences of time steps, each a list of "
            f"{card.n_features} features ({_features(card)}); got shape {list(x.shape)}"
        )
    n, t = x.shape[0], x.shape[1]
    if not 1 <= n <= max_sequences:
        raise InvalidInput(f"{field} must hold 1 to {max_sequences} sequences; got {n}")
    if not 1 <= t <= max_steps:
        raise InvalidInput(f"each sequence must hold 1 to {max_steps} time steps; got {t}")
    check_values(card, x, field)


def check_state(card: ModelCard, arr: np.ndarray, n: int | None, field: str) -> np.ndarray:
    """A client's state ``[layers, n, hidden]`` (or ``[layers, hidden]`` when ``n`` is None)."""
    want = [card.num_layers, n, card.hidden_size] if n else [card.num_layers, card.hidden_size]
    if list(arr.shape) != want:
        raise InvalidInput(
            f"{field} must have shape {want} ([layers, {'batch, ' if n else ''}hidden]); got {list(arr.shape)}"
        )
    check_finite(arr, field)
    return arr


def initial_state(card: ModelCard, given: dict[str, np.ndarray | None], n: int | None) -> np.ndarray:
    """The state to start from: zeros, or a client's state tensors (``h0`` and ``c0`` for an
    LSTM, ``h0`` for a GRU: all or none), as ``[S, layers, n, hidden]`` (``[S, layers, hidden]``
    when ``n`` is None)."""
    names = card.state_inputs
    foreign = sorted(k for k, v in given.items() if v is not None and k not in names)
    if foreign:
        raise InvalidInput(f"{', '.join(foreign)}: this model ({card.cell.upper()}) keeps {', '.join(names)} only")
    parts = [given.get(k) for k in names]
    if any(p is None for p in parts) and any(p is not None for p in parts):
        raise InvalidInput(f"give both {' and '.join(names)}, or neither (zeros)")  # two: an LSTM's h and C
    lead = (len(names), card.num_layers)
    state = np.zeros((*lead, n, card.hidden_size) if n else (*lead, card.hidden_size), np.float32)
    for i, (k, p) in enumerate(zip(names, parts, strict=True)):
        if p is not None:
            state[i] = check_state(card, p, n, k)
    return state
