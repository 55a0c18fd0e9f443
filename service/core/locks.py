"""Per-key asyncio locks that exist only while someone holds or waits for them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from types import TracebackType

from service.errors import DeadlineExceeded


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _Hold:
    """``async with locks.hold(key, deadline)``: a plain class, not a generator-based context
    manager, since it sits on every step's path. ``deadline`` is ``time.monotonic()``'s."""

    __slots__ = ("_deadline", "_entry", "_key", "_locks")

    def __init__(self, locks: KeyedLocks, key: Hashable, deadline: float) -> None:
        self._locks = locks
        self._key = key
        self._deadline = deadline

    async def __aenter__(self) -> None:
        table = self._locks._locks
        entry = table.get(self._key)
        if entry is None:
            entry = table[self._key] = _Entry()
        entry.users += 1
        self._entry = entry
        try:
            if entry.lock.locked():  # wait_for costs a task: only pay it when there is a wait
                await asyncio.wait_for(entry.lock.acquire(), max(0.0, self._deadline - time.monotonic()))
            else:
                await entry.lock.acquire()
        except BaseException as e:
            self._leave()
            if isinstance(e, TimeoutError):
                raise DeadlineExceeded(
                    "the request's deadline passed while it waited behind earlier steps of the same session; "
                    "the session is unchanged"
                ) from None
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._entry.lock.release()
        self._leave()

    def _leave(self) -> None:
        self._entry.users -= 1
        if self._entry.users == 0:
            del self._locks._locks[self._key]


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[Hashable, _Entry] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def hold(self, key: Hashable, deadline: float) -> _Hold:
        return _Hold(self, key, deadline)
