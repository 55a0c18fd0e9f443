"""Session semantics in one place: what may run, from which state, and what a step's outcome is.

Every transport's step reaches these through the session service (``dp.sessions``) and the
batch handler (:mod:`service.core.model_worker`), which only read, run and write:

- :class:`Gate`: readiness. New work is refused with 503 while the models load and once
  draining has begun.
- :func:`decide`: from a stored record, whether a step runs (its ``expected_step`` matches,
  or it sent none), is a retry of the last applied request (its stored reply comes back,
  the state does not move), or is refused (409 with the current step; 404 for a session
  that does not exist for this caller -- another key's session does not exist either).
- :func:`settle`: after the run, whether the new state may be written: not when the
  request's deadline passed first (504, nothing changed); and what a failed
  compare-and-set means (another writer came first).
- :func:`run_step`: the re-run loop. A step without ``expected_step`` whose write lost to
  another writer runs again from the new state until its deadline; one with it is refused,
  since the state it named is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from service.batching.batcher import Batcher, Ticket
from service.core.work import StaleWrite, StepResult, StepWork
from service.errors import DeadlineExceeded, NotReady, ServiceError, SessionNotFound, StepConflict, duration
from service.sessions.record import SessionRecord, visible
from service.sessions.store import SessionStore


class Gate:
    """Whether the service takes new work: shut until started, shut again once draining."""

    def __init__(self) -> None:
        self.started = False
        self.draining = False

    def check(self) -> None:
        """Raise NotReady unless new work may start."""
        if self.draining:
            raise NotReady("the service is shutting down; retry on another replica")
        if not self.started:
            raise NotReady("the service is still loading its models")

    def reason(self) -> str | None:
        """Why new work is refused (readiness), or None."""
        if not self.started:
            return "models are loading"
        if self.draining:
            return "the service is shutting down"
        return None


def unknown_session(session_id: str, store: SessionStore) -> SessionNotFound:
    return SessionNotFound(
        f"session {session_id!r} is unknown or has expired (sessions expire after {duration(store.ttl_s)} without a "
        f"step){store.restart_note}; create a new session"
    )


def decide(work: StepWork, rec: SessionRecord | None, store: SessionStore) -> SessionRecord | StepResult:
    """The stored record to step from, or the stored reply of a retried request; raises
    SessionNotFound or StepConflict."""
    if not visible(rec, work.owner):
        raise unknown_session(work.session_id, store)
    assert rec is not None
    e = work.expected_step
    if e is None or e == rec.step:
        return rec
    last = rec.last
    if last is not None and e == last.from_step and work.digest == last.digest:
        return StepResult(rec.id, last.outputs, rec.step, replayed=True, state=rec.state)
    raise StepConflict(
        f"expected_step {e} does not match the session, which is at step {rec.step}"
        + (" (and this is not a retry of its last request)" if e < rec.step else ""),
        current_step=rec.step,
    )


def settle(ticket: Ticket, rec: SessionRecord, state: np.ndarray, outputs: np.ndarray, now: float) -> SessionRecord:
    """The record to write for a step that ran; DeadlineExceeded (nothing is written) when its
    caller's deadline passed before this point of no return."""
    if not ticket.claim():
        raise DeadlineExceeded("the request's deadline passed before its step was stored")
    return rec.advanced(state, outputs, ticket.payload.digest, now)


def lost_write() -> StaleWrite:
    """A compare-and-set that found another writer's record."""
    return StaleWrite("the session was advanced by another request at the same time; retry with its current step")


class Worker(Protocol):
    """What a step runs on: a model version's batcher, unless the version was retired."""

    retired: bool
    batcher: Batcher


async def run_step(w: Worker, work: StepWork, deadline: float, gone: Callable[[str], ServiceError]) -> StepResult:
    """Run a step on ``w``'s batcher, and run it again while its write loses to another writer
    and it sent no ``expected_step``, until ``deadline`` (``time.monotonic()``; each round one
    contender wins, so n contenders finish in n rounds). ``gone(session_id)`` is the error when
    the version was retired meanwhile (a forced unload while the step waited for its lock)."""
    while True:
        if w.retired:
            raise gone(work.session_id)
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the request's deadline passed before its step could run; the session is unchanged")
        try:  # the batch handler reports a store it cannot reach as StoreUnavailable itself
            return await w.batcher.submit(work, key=work.session_id, timeout=left)
        except StaleWrite:
            if work.expected_step is not None or time.monotonic() >= deadline:
                raise
