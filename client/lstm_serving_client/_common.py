"""What the sync and async clients share: retry policy, replica rotation, reading encoding,
and the reading of replies. No I/O here."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any

from lstm_serving_client.errors import ProtocolError, ServingError, StepConflict, error_for

RETRIED_STATUSES = frozenset({503, 504})
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a call tries before it raises. A retry waits ``Retry-After`` when the server
    sent one (capped at ``max_retry_after_s``), else an exponential backoff with full jitter."""

    attempts: int = 10
    """Tries per call, the first included."""
    backoff_s: float = 0.05
    """First backoff; doubles each retry."""
    max_backoff_s: float = 2.0
    max_retry_after_s: float = 30.0
    deadline_s: float = 60.0
    """A call gives up when its next wait would pass this many seconds since it started."""

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))


class Endpoints:
    """The replicas' base URLs, tried in turn: a call stays on the current one until it fails
    (network error, 503), then moves to the next."""

    def __init__(self, urls: str | Sequence[str]) -> None:
        items = [urls] if isinstance(urls, str) else list(urls)
        if not items:
            raise ValueError("at least one URL is needed")
        self.urls = [u.rstrip("/") for u in items]
        self._i = 0

    @property
    def current(self) -> str:
        return self.urls[self._i]

    def advance(self, failed: str) -> None:
        """Move past ``failed`` (unless another caller already moved on)."""
        if self.urls[self._i] == failed:
            self._i = (self._i + 1) % len(self.urls)

    def ws(self, path: str) -> str:
        base = self.current
        scheme = "wss://" if base.startswith("https://") else "ws://"
        return scheme + base.split("://", 1)[-1] + path


def headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _number(v: Any) -> float:
    if isinstance(v, bool) or (not isinstance(v, (int, float)) and not hasattr(v, "__float__")):
        raise TypeError(f"a reading's features must be numbers, got {v!r}")
    return float(v)


def as_reading(value: Any) -> list[float]:
    """One reading (time step): a sequence of feature values, or a 1-D array."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"a reading must be a sequence of feature values, got {type(value).__name__}")
    return [_number(v) for v in value]


def as_rows(value: Any) -> list[list[float]]:
    """``T`` readings ``[T, F]`` (lists, tuples or a 2-D array); a single reading ``[F]`` is ``T = 1``."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError("readings must be a non-empty sequence of readings [T, F] (or one reading [F])")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return [as_reading(value)]
    return [as_reading(v) for v in value]


def as_nested(value: Any) -> Any:
    """Arrays to lists (for h0/c0 and predict inputs); lists pass through."""
    return value.tolist() if hasattr(value, "tolist") else value


def retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: fall back to the backoff


def error_body(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError:
        return {"error": text.strip()[:500] or None}
    return body if isinstance(body, dict) else {"error": str(body)}


def own_retry_conflict(err: ServingError, advance: int, resent: bool) -> bool:
    """A 409 caused by this client's own retry: the first try was applied (its reply lost)
    while the retry raced it. The session then sits exactly ``advance`` steps past the
    expected step; sending the identical request once more gets the stored reply back."""
    return (
        resent
        and isinstance(err, StepConflict)
        and err.current_step is not None
        and err.current_step == err.expected_step + advance
    )


def step_outputs(reply: dict[str, Any], expected: int, n: int) -> list[list[float]]:
    """The outputs of a step reply, after checking it accounts for exactly ``n`` readings."""
    outputs = reply.get("outputs")
    if reply.get("step") != expected + n or not isinstance(outputs, list) or len(outputs) != n:
        raise ProtocolError(
            f"step reply does not add up: sent {n} readings at step {expected}, "
            f"got step {reply.get('step')} with {len(outputs) if isinstance(outputs, list) else 'no'} outputs"
        )
    return [[float(v) for v in row] for row in outputs]


def ws_error(reply: dict[str, Any], expected: int) -> ServingError:
    return error_for(int(reply.get("status") or 500), reply, session=True, expected_step=expected)


@dataclass(frozen=True)
class Prediction:
    """A stateless predict's result: ``outputs [batch, seq, O]`` and the final state ``hn``/``cn``
    ``[L, batch, H]`` (``cn`` is None for a GRU, which keeps h only)."""

    model: str
    version: str
    outputs: list[list[list[float]]]
    hn: list[list[list[float]]]
    cn: list[list[list[float]]] | None


class Attempts:
    """One call's retry budget: counts tries, keeps the last error, says how long to wait
    before the next try or that the bound is reached (``None``)."""

    def __init__(self, policy: RetryPolicy, replicas: int) -> None:
        self.policy = policy
        self.replicas = replicas
        self.tries = 0
        self.start = monotonic()
        self.last: ServingError | None = None

    def next_wait(self, err: ServingError, retry_after: float | None, moved: bool) -> float | None:
        self.last = err
        self.tries += 1
        if self.tries >= self.policy.attempts:
            return None
        # having just moved to another replica, try it at once -- until every replica has had its turn
        wait = 0.0 if moved and self.tries % self.replicas else self.policy.delay(self.tries - 1, retry_after)
        if monotonic() - self.start + wait > self.policy.deadline_s:
            return None
        return wait

    def give_up(self) -> ServingError:
        assert self.last is not None
        return self.last


class Call:
    """One call's retry state machine, the one the sync and async clients share over HTTP and
    WebSocket: the transport makes each try and tells the machine how it went; the machine
    says how long to wait before the next try, or raises.

    - :meth:`begin` names the replica to try (``Endpoints.current``).
    - :meth:`unreachable`: the try did not get a reply (network error, dropped connection):
      the next replica, at once while there is one not tried yet, else after a backoff.
    - :meth:`refused`: an error reply. 503 (overloaded, draining, store unreachable) moves to
      the next replica, 504 retries where it is, both after ``Retry-After`` or a backoff; any
      other error raises at once -- except a 409 this client's own retry caused (the first try
      was applied, its reply lost): the same request is sent once more at once, and the server
      answers it from the stored reply. ``moved`` tells a WebSocket to drop its connection.

    Raises the last error once ``RetryPolicy`` bounds the call (attempts or time).
    """

    def __init__(self, policy: RetryPolicy, endpoints: Endpoints, advance: int = 0) -> None:
        self.endpoints = endpoints
        self.advance = advance  # the steps a step request adds (0: not a step)
        self.attempts = Attempts(policy, len(endpoints.urls))
        self.base = endpoints.current
        self.resent = self.disambiguated = self.moved = False

    def begin(self) -> str:
        self.base = self.endpoints.current
        self.moved = False
        return self.base

    def unreachable(self, err: ServingError) -> float:
        self.endpoints.advance(self.base)
        self.moved = True
        return self._wait(err, None)

    def refused(self, err: ServingError, retry_after: float | None = None) -> float:
        if not self.disambiguated and own_retry_conflict(err, self.advance, self.resent):
            self.disambiguated = True
            return 0.0
        if err.status not in RETRIED_STATUSES:
            raise err
        self.moved = err.status == 503
        if self.moved:
            self.endpoints.advance(self.base)
        return self._wait(err, retry_after)

    def _wait(self, err: ServingError, retry_after: float | None) -> float:
        wait = self.attempts.next_wait(err, retry_after, self.moved)
        if wait is None:
            raise self.attempts.give_up()
        self.resent = True
        return wait
