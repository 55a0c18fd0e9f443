"""What a session is: its model, its (h, C), how far it has got, and its last reply."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import numpy as np

REV_BITS = 40  # a new session's first rev: random, and well inside the 53 bits Redis's scripts compare exactly


def new_session_id(model: str, version: str) -> str:
    """``<model>.<version>.<144 random bits>``: unguessable, and routable without a lookup."""
    return f"{model}.{version}.{secrets.token_urlsafe(18)}"


def parse_session_id(session_id: str) -> tuple[str, str] | None:
    parts = session_id.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1]


def digest(x: np.ndarray) -> bytes:
    """A request's fingerprint, to tell a retry from a different request."""
    return hashlib.blake2b(np.ascontiguousarray(x, np.float32).tobytes(), digest_size=16).digest()


@dataclass(slots=True)
class LastStep:
    """The last applied step request and its reply, kept so that a retry gets the same reply."""

    from_step: int  # the session's step before it
    digest: bytes
    outputs: np.ndarray  # float32 [T, n_outputs]


@dataclass(slots=True)
class SessionRecord:
    """One session. ``state`` is float32 ``[S, layers, hidden]``: h then C (an LSTM), or h (a GRU).

    ``rev`` counts writes and makes updates compare-and-set: a store accepts a record with
    ``rev = n + 1`` only over the stored ``rev = n``.

    ``slot``: the session's row in the memory store's arena (:mod:`service.sessions.arena`),
    -1 elsewhere. A record the memory store holds has ``state`` as a view of that row: it reads
    what the row holds when it is read, which every commit of the session overwrites, and which
    another session's state may fill once this one is deleted or expired. Read it before the
    next ``await``, or copy it.
    """

    id: str
    model: str
    version: str
    sha256: str
    state: np.ndarray
    step: int
    created: float  # wall-clock seconds
    last_used: float
    rev: int = 0
    owner: str | None = None
    last: LastStep | None = None
    slot: int = -1

    @classmethod
    def fresh(
        cls,
        session_id: str,
        model: str,
        version: str,
        sha256: str,
        state: np.ndarray,
        step: int,
        owner: str | None,
        now: float,
    ) -> SessionRecord:
        """A new session. Its first rev is random: a sequence id is created again after it
        ended, and a copy of its earlier life (another process's cache) must not pass the
        compare-and-set of the new one."""
        return cls(session_id, model, version, sha256, state, step, now, now, secrets.randbits(REV_BITS), owner)

    def restarted(self, state: np.ndarray, now: float) -> SessionRecord:
        """The same session (its rev too) back at step 0 from ``state``, with no last reply: a
        sequence's start; the step that follows commits it over the stored rev."""
        return SessionRecord(
            self.id, self.model, self.version, self.sha256, state, 0, self.created, now, self.rev, self.owner
        )

    def advanced(self, state: np.ndarray, outputs: np.ndarray, d: bytes, now: float) -> SessionRecord:
        # the constructor, not dataclasses.replace: this runs for every step
        return SessionRecord(
            self.id,
            self.model,
            self.version,
            self.sha256,
            state,
            self.step + outputs.shape[0],
            self.created,
            now,
            self.rev + 1,
            self.owner,
            LastStep(self.step, d, outputs),
        )


def stack_states(records: list[SessionRecord]) -> np.ndarray:
    """The records' states as one new array ``[S, layers, len(records), hidden]``."""
    return np.stack([r.state for r in records], axis=2)


def visible(rec: SessionRecord | None, owner: str | None) -> bool:
    """Whether a caller (``owner``: its API key) may see a session: one that belongs to no key,
    or to this one. To anyone else it does not exist (404, never 403: ids are not probed)."""
    return rec is not None and (rec.owner is None or rec.owner == owner)
