"""What travels through the batcher, and what comes back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import StepConflict


@dataclass(slots=True)
class StatelessWork:
    x: np.ndarray  # float32 [n, T, F]
    state: np.ndarray  # float32 [S, L, n, H]: the card's state tensors stacked


@dataclass(slots=True)
class StepWork:
    session_id: str
    x: np.ndarray  # float32 [T, F]
    expected_step: int | None
    digest: bytes
    owner: str | None
    start: bool = False  # a sequence's first request: from zeros, created if it does not exist
    end: bool = False  # a sequence's last request: the sequence is released once the step is stored
    sequence: int | str | None = None  # the client's sequence id, for a sequence's request


@dataclass(slots=True)
class PredictResult:
    y: np.ndarray  # [n, T, O]
    state: np.ndarray  # [S, L, n, H]


@dataclass(slots=True)
class StepResult:
    session_id: str
    outputs: np.ndarray  # [T, O]
    step: int  # the session's step after this request
    replayed: bool  # True when this was a retry answered from the stored reply
    state: np.ndarray  # [S, L, H], the session's state after this request


class StaleWrite(StepConflict):
    """The session was advanced by someone else between read and write (another replica)."""
