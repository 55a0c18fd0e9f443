"""Session semantics in one place: what may run, from which state, and what a step's outcome is.

Every transport's step reaches these through the session service (``dp.sessions``), which
queues it on its model version's batcher (in order per session: a step runs once the one
before it is answered), and the batch handler (:mod:`service.core.model_worker`), which
reads, runs and writes:

- :class:`Gate`: readiness. New work is refused with 503 while the models load and once
  draining has begun.
- :func:`begin`: the record a sequence's start steps from: the sequence back at step 0 from
  zeros (a new one when it does not exist).
- :func:`decide`: whether a step runs (its ``expected_step`` matches, or it sent none), is a
  retry of the last applied request (its stored reply comes back, the state does not move),
  or is refused (409 with the current step; 404 for a session that does not exist for this
  caller -- another key's session does not exist either --, 400 for a sequence that is not
  active).
- :func:`settle`: after the run, whether the new state may be written: not when the
  request's deadline passed first (504, nothing changed).
- :func:`lost`: what a write that lost its compare-and-set to another writer means: a step
  without ``expected_step`` runs again from the new state (before the session's later
  steps, until its deadline; each round one contender wins, so n contenders finish in n
  rounds); one with it is refused, since the state it named is gone.
"""

from __future__ import annotations

import numpy as np

from service.batching.batcher import Ticket
from service.core.work import StaleWrite, StepResult, StepWork
from service.errors import DeadlineExceeded, InvalidInput, NotReady, SessionNotFound, StepConflict, duration
from service.runtime.repository import ModelCard
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


def begin(
    work: StepWork, rec: SessionRecord | None, card: ModelCard, store: SessionStore
) -> tuple[SessionRecord | None, bool]:
    """The record a sequence's start (``work.start``) steps from, and whether it is new (to
    create, not to compare-and-set): the caller's sequence back at step 0 from zeros, keeping
    its rev (the step commits over the stored one), or a new sequence; SessionNotFound when
    the id is another key's. Any other step steps from the stored record."""
    zeros = np.zeros((len(card.states), card.num_layers, card.hidden_size), np.float32)
    now = store.clock()
    if rec is None:
        return SessionRecord.fresh(
            work.session_id, card.name, card.version, card.sha256, zeros, 0, work.owner, now
        ), True
    if not visible(rec, work.owner):
        raise unknown_session(work.session_id, store)
    return rec.restarted(zeros, now), False


def not_active(work: StepWork, card: ModelCard, store: SessionStore) -> InvalidInput:
    """A sequence's request, not its start, for a sequence that does not exist for its caller."""
    return InvalidInput(
        f"sequence {work.sequence!r} of {card.key} is not active (never started, already ended, or expired after "
        f"{duration(store.ttl_s)} idle{store.restart_note}): send its first request with sequence_start=true"
    )


def decide(
    work: StepWork, rec: SessionRecord | None, card: ModelCard, store: SessionStore
) -> SessionRecord | StepResult:
    """The stored record to step from, or the stored reply of a retried request; raises
    SessionNotFound (InvalidInput for a sequence that is not active) or StepConflict."""
    if not visible(rec, work.owner):
        raise unknown_session(work.session_id, store) if work.sequence is None else not_active(work, card, store)
    assert rec is not None
    e = work.expected_step
    if e is None or e == rec.step:
        return rec
    last = rec.last
    if last is not None and e == last.from_step and work.digest == last.digest:
        return StepResult(rec.id, last.outputs, rec.step, replayed=True, state=rec.state.copy())  # a stored row: own it
    raise StepConflict(
        f"expected_step {e} does not match the session, which is at step {rec.step}"
        + (" (and this is not a retry of its last request)" if e < rec.step else ""),
        current_step=rec.step,
    )


def settle(ticket: Ticket, rec: SessionRecord, state: np.ndarray, outputs: np.ndarray, now: float) -> SessionRecord:
    """The record to write for a step that ran; DeadlineExceeded (nothing is written) when its
    caller's deadline passed before this point of no return."""
    if not ticket.claim():
        raise DeadlineExceeded("the request's deadline passed before its step was stored; the session is unchanged")
    return rec.advanced(state, outputs, ticket.payload.digest, now)


def lost(work: StepWork) -> StaleWrite | None:
    """A compare-and-set that found another writer's record: the error for a step that named
    the state it expected, None for one that runs again from the new state."""
    if work.expected_step is None:
        return None
    return StaleWrite("the session was advanced by another request at the same time; retry with its current step")
