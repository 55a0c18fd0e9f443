"""The session service: sessions and sequences (the Open Inference Protocol's sequence
extension) over the store, for every transport.

It checks a request and queues its steps on the model version's batcher, keyed by the
session: the batcher runs them in order inside this process (across processes the store's
compare-and-set does it), and the batch handler applies the session semantics of
:mod:`service.core.streams`. It checks ownership in one place
(:func:`service.sessions.record.visible`) and counts every session it creates or deletes
(the batch handler counts sequences that start or end with a step).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from service.config import Settings
from service.core import inputs
from service.core.model_worker import ModelWorker
from service.core.registry import ModelRegistry
from service.core.streams import Gate, unknown_session
from service.core.work import StepResult, StepWork
from service.errors import (
    STORE_ERRORS,
    InvalidInput,
    SessionNotFound,
    SnapshotMismatch,
    store_unreachable,
)
from service.metrics import Metrics
from service.runtime.repository import ModelCard
from service.sessions.record import SessionRecord, digest, new_session_id, parse_session_id, visible
from service.sessions.store import SessionStore

SNAPSHOT_FORMAT = "lstm-session-snapshot/1"
SEQUENCE_IDS_KEPT = 10_000
MAX_STEP = 2**53  # a snapshot's step: exact as a JSON number in any client (a double)


class SessionService:
    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        metrics: Metrics,
        registry: ModelRegistry,
        gate: Gate,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.registry = registry
        self._admit = gate.check  # raises NotReady while the service starts or drains
        self._sequence_ids: dict[tuple, str] = {}

    @property
    def ttl_s(self) -> float:
        """Seconds a session lives without a step."""
        return self.store.ttl_s

    def card(self, session_id: str) -> ModelCard:
        """The card of the model version a session id names (404 when none is served)."""
        return self._session_worker(session_id).card

    # -- sessions ------------------------------------------------------------------------
    def _new_record(self, w: ModelWorker, state: np.ndarray, step: int, owner: str | None) -> SessionRecord:
        c = w.card
        return SessionRecord.fresh(
            new_session_id(c.name, c.version), c.name, c.version, c.sha256, state, step, owner, self.store.clock()
        )

    async def create(
        self,
        name: str,
        version: str | None = None,
        h0: np.ndarray | None = None,
        c0: np.ndarray | None = None,
        owner: str | None = None,
    ) -> SessionRecord:
        self._admit()
        w = self.registry.worker(name, version)
        state = inputs.initial_state(w.card, {"h0": h0, "c0": c0}, None)
        return await self._create(self._new_record(w, state, 0, owner))

    def _session_worker(self, session_id: str) -> ModelWorker:
        w = self.registry.session_worker(session_id)
        if w is None or w.retired:
            raise self._no_worker(session_id)
        return w

    def _no_worker(self, session_id: str) -> SessionNotFound:
        parsed = parse_session_id(session_id)
        reason = self.registry.unavailable(*parsed) if parsed else None
        if parsed and reason and reason.startswith("unloaded"):
            return SessionNotFound(
                f"session {session_id!r} ran on version {parsed[1]!r} of model {parsed[0]!r}, which was {reason}: "
                "its state is gone; create a new session"
            )
        return unknown_session(session_id, self.store)

    async def step(
        self,
        session_id: str,
        x: np.ndarray,
        expected_step: int | None = None,
        owner: str | None = None,
        field: str = "inputs",
    ) -> StepResult:
        """Run the steps ``x [T, F]`` of a session. In order per session (the batcher runs a
        session's step once the one before it is answered); a failure changes nothing. The
        deadline counts from here: the wait behind the session's earlier steps, the queue and
        the compute together."""
        self._admit()
        w = self._session_worker(session_id)
        inputs.check_steps(w.card, x, field, self.settings.max_steps_per_request)
        if expected_step is not None and expected_step < 0:
            raise InvalidInput("expected_step must be >= 0")
        work = StepWork(session_id, x, expected_step, digest(x), owner)
        return await w.batcher.enqueue(work, key=session_id, timeout=self.settings.request_timeout_s)

    # -- sequences (Open Inference Protocol sequence extension) --------------------------
    def sequence_session_id(self, w: ModelWorker, sequence_id: int | str, owner: str | None = None) -> str:
        """A sequence is a session whose id derives from (model, version, API key, sequence id):
        with auth on, each key has its own sequence ids. Remembered for the sequences seen last
        (the id is derived again on every request of a stream otherwise)."""
        key = (w.card.key, owner, type(sequence_id), sequence_id)
        sid = self._sequence_ids.get(key)
        if sid is None:
            kind = "i" if isinstance(sequence_id, int) else "s"
            token = base64.urlsafe_b64encode(f"{owner or ''}/{sequence_id}".encode()).rstrip(b"=").decode()
            sid = f"{w.card.name}.{w.card.version}.~{kind}{token}"
            if len(token) <= 128:  # long string ids are not kept
                self._sequence_ids[key] = sid
                if len(self._sequence_ids) > SEQUENCE_IDS_KEPT:
                    del self._sequence_ids[next(iter(self._sequence_ids))]
        return sid

    async def sequence_step(
        self,
        name: str,
        version: str | None,
        sequence_id: int | str,
        x: np.ndarray,
        start: bool = False,
        end: bool = False,
        owner: str | None = None,
        expected_step: int | None = None,
    ) -> tuple[ModelWorker, StepResult]:
        """One request of a sequence: ``start`` (re)sets its state to zeros first, ``end``
        releases it after replying; both happen with the step, in the batch that runs it (a
        step that fails resets and releases nothing). Otherwise exactly a session step,
        ``expected_step`` and its replays included. A start begins at step 0, so its
        ``expected_step`` can only be 0 (and its retry, a reset and the same step again,
        gives the same reply)."""
        if start and expected_step not in (None, 0):
            raise InvalidInput(
                f"expected_step {expected_step} with sequence_start: a sequence starts at step 0, so expect 0"
            )
        self._admit()
        w = self._sole_worker(name, version) or await self._sequence_worker(name, sequence_id, owner, start)
        inputs.check_steps(w.card, x, "input x", self.settings.max_steps_per_request)
        sid = self.sequence_session_id(w, sequence_id, owner)
        if w.retired:  # unloaded while the store was read
            raise self._no_worker(sid)
        work = StepWork(sid, x, expected_step, digest(x), owner, start, end, sequence_id)
        return w, await w.batcher.enqueue(work, key=sid, timeout=self.settings.request_timeout_s)

    def _sole_worker(self, name: str, version: str | None) -> ModelWorker | None:
        """The version a sequence runs on when no store read is needed to tell: the one the
        request names, or the model's only one; None otherwise."""
        if version is not None:
            return self.registry.worker(name, version)
        w = self.registry.worker(name)
        return w if len(self.registry.workers[name]) == 1 else None

    async def _sequence_worker(self, name: str, sequence_id: int | str, owner: str | None, start: bool) -> ModelWorker:
        """The version a sequence runs on when the request names none and several are served:
        a new sequence (``start``) goes to the newest version, and a continuing one stays on
        the version it started on: its id carries no version, so the served versions are
        looked up, newest first, in one store read."""
        newest = self.registry.worker(name)
        served = self.registry.served_newest_first(name)
        ids = [self.sequence_session_id(v, sequence_id, owner) for v in served]
        records = await self._store_call(self.store.get_many(ids))
        if start:  # a restart on a newer version ends the sequence where it ran before
            for v, sid, rec in zip(served, ids, records, strict=True):
                if v is not newest and visible(rec, owner):
                    await self._delete(sid, owner)
            return newest
        for v, rec in zip(served, records, strict=True):
            if visible(rec, owner):
                return v
        return newest

    async def get(self, session_id: str, owner: str | None = None) -> SessionRecord:
        self._admit()
        (rec,) = await self._store_call(self.store.get_many([session_id]))
        if not visible(rec, owner):
            raise unknown_session(session_id, self.store)
        assert rec is not None
        return rec

    async def delete(self, session_id: str, owner: str | None = None) -> None:
        rec = await self.get(session_id, owner)
        if not await self._delete(session_id, rec.owner):
            raise unknown_session(session_id, self.store)

    async def export(self, session_id: str, owner: str | None = None) -> dict[str, Any]:
        rec = await self.get(session_id, owner)
        return {
            "format": SNAPSHOT_FORMAT,
            "model": rec.model,
            "version": rec.version,
            "sha256": rec.sha256,
            "step": rec.step,
            **{name: part.tolist() for name, part in zip("hc", rec.state, strict=False)},
        }

    async def import_snapshot(self, snap: dict[str, Any], owner: str | None = None) -> SessionRecord:
        self._admit()
        if snap.get("format") != SNAPSHOT_FORMAT:
            raise InvalidInput(f"not a session snapshot: format must be {SNAPSHOT_FORMAT!r}")
        w = self.registry.worker(str(snap.get("model")), str(snap.get("version")))
        if snap.get("sha256") != w.card.sha256:
            raise SnapshotMismatch(
                f"the snapshot was taken on {w.card.key} with checksum {snap.get('sha256')!r}, but the served "
                f"{w.card.key} has checksum {w.card.sha256!r}: its state would not mean the same"
            )
        step = snap.get("step")
        if type(step) is not int or not 0 <= step < MAX_STEP:
            raise InvalidInput("snapshot step must be an integer from 0 to 2**53 - 1")
        names = w.card.states  # h and c for an LSTM, h for a GRU
        parts = [p for k in names if isinstance(p := snap.get(k), np.ndarray)]
        if len(parts) != len(names) or any(snap.get(k) is not None for k in ("h", "c") if k not in names):
            raise InvalidInput(f"snapshot {' and '.join(names)} must be arrays [layers, hidden], and nothing else")
        state = np.stack([inputs.check_state(w.card, p, None, k) for k, p in zip(names, parts, strict=True)])
        return await self._create(self._new_record(w, state, step, owner))

    async def _create(self, rec: SessionRecord) -> SessionRecord:
        """Store a new session within the capacity limits, and count it."""
        await self._store_call(self.store.create(rec, self.settings.max_sessions, self.settings.max_sessions_per_key))
        self.metrics.sessions_created.inc()
        return rec

    async def _delete(self, session_id: str, owner: str | None) -> bool:
        """Delete a session, and count it; False if it was already gone."""
        gone = bool(await self._store_call(self.store.delete(session_id, owner)))
        if gone:
            self.metrics.sessions_deleted.inc()
        return gone

    async def count(self) -> int:
        return await self.store.count()

    async def _store_call(self, aw: Any) -> Any:
        try:
            return await aw
        except STORE_ERRORS as e:
            raise store_unreachable(e) from e
