"""The session store protocol. The data plane talks to stores only through this.

All methods but ``gather`` are coroutines so that a networked store fits. Batch methods take
and return lists in the same order, so one batch costs one round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from service.sessions.record import SessionRecord


class SessionStore(Protocol):
    ttl_s: float

    restart_note: str
    """What a 404 for an unknown session adds about restarts: how this store loses sessions
    when the service restarts (empty: it does not)."""

    save_failed: bool
    """Set by ``close`` when a store that keeps its sessions across a restart could not save
    them; the process then exits non-zero."""

    @property
    def caches(self) -> bool:
        """Whether ``get_many(ids, trust_cache=True)`` may answer from copies this process
        wrote or read last (which another process may have changed since)."""

    clock: Callable[[], float]
    """Unix time as the store sees it: records are stamped with it and expire by it (tests
    inject a clock into the memory store)."""

    async def start(self) -> None:
        """Open connections, start background sweeps. Called once from the running loop."""

    async def seal(self) -> None:
        """Shutdown has stopped admission and finished the queued batches: a store that saves its
        sessions on shutdown saves them now and refuses writes from here on; others do nothing."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the store can serve; readiness reports it."""

    async def create(self, record: SessionRecord, max_sessions: int, max_per_owner: int | None = None) -> None:
        """Insert a new session; raise CapacityExceeded when ``max_sessions`` are live, or when
        ``record.owner`` already holds ``max_per_owner``."""

    async def get_many(self, ids: list[str], trust_cache: bool = False) -> list[SessionRecord | None]:
        """Live records by id; None for unknown or expired ones. Does not refresh the TTL.

        ``trust_cache``: where this process holds the copy it last wrote or read, that copy,
        with no round trip; it may be stale, which a compare-and-set on it will find."""

    def gather(self, records: list[SessionRecord]) -> np.ndarray:
        """The states of ``records`` as one new array ``[S, layers, len(records), hidden]``: a
        batch's state input. ``records`` are one model version's, each as ``get_many`` gave it
        with no store write since (the memory store reads the rows they name), or a sequence's
        start not stored yet (its own zeros). The memory store takes them from its arena in one
        copy; the Redis store stacks the states it read."""

    async def commit_many(self, records: list[SessionRecord]) -> list[bool]:
        """Compare-and-set each record over the stored ``rev - 1``; refreshes its TTL.

        False where the stored record is gone or has another ``rev`` (someone else wrote).
        """

    async def delete(self, session_id: str, owner: str | None = None) -> bool:
        """Remove a session (``owner``: the key it belongs to, for per-key counts)."""

    async def count(self) -> int: ...

    async def count_version(self, model: str, version: str) -> int:
        """Live sessions (sequences included) of one model version: those whose id starts with
        ``<model>.<version>.``. For unloading a version, not for the hot path: it may scan."""

    async def delete_version(self, model: str, version: str) -> int:
        """Remove every session of one model version (a forced unload); returns how many."""
