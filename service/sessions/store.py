"""The session store protocol. The data plane talks to stores only through this.

All methods are coroutines so that a networked store fits. Batch methods take and return
lists in the same order, so one batch costs one round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from service.sessions.record import SessionRecord


class SessionStore(Protocol):
    ttl_s: float
    clock: Callable[[], float]
    """Unix time as the store sees it: records are stamped with it and expire by it (tests
    inject a clock into the memory store)."""

    async def start(self) -> None:
        """Open connections, start background sweeps. Called once from the running loop."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the store can serve; readiness reports it."""

    async def create(self, record: SessionRecord, max_sessions: int, max_per_owner: int | None = None) -> None:
        """Insert a new session; raise CapacityExceeded when ``max_sessions`` are live, or when
        ``record.owner`` already holds ``max_per_owner``."""

    async def get_many(self, ids: list[str]) -> list[SessionRecord | None]:
        """Live records by id; None for unknown or expired ones. Does not refresh the TTL."""

    async def commit_many(self, records: list[SessionRecord]) -> list[bool]:
        """Compare-and-set each record over the stored ``rev - 1``; refreshes its TTL.

        False where the stored record is gone or has another ``rev`` (someone else wrote).
        """

    async def delete(self, session_id: str, owner: str | None = None) -> bool:
        """Remove a session (``owner``: the key it belongs to, for per-key counts)."""

    async def count(self) -> int: ...
