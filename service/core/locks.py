"""Per-key asyncio locks that exist only while someone holds or waits for them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

from service.errors import DeadlineExceeded


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: Hashable, timeout: float) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            try:
                if lock.locked():  # wait_for costs a task: only pay it when there is a wait
                    await asyncio.wait_for(lock.acquire(), timeout)
                else:
                    await lock.acquire()
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the request waited its whole deadline of {timeout:g} s behind earlier steps of the same session"
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]
