"""Streaming clients that wait out a server or store outage together, and say how far each got."""

from __future__ import annotations

import asyncio
import time


class Clients:
    """What the streaming clients share: the server's address, how far each stream is
    acknowledged, and how many are parked waiting for the server to come back."""

    def __init__(self, n: int) -> None:
        self.url = ""
        self.acked = [0] * n
        self.acked_at: list[list[float]] = [[] for _ in range(n)]  # monotonic time of each acknowledged step
        self.parked = 0
        self.generation = 0  # counts resumes
        self.done = 0
        self.changed = asyncio.Condition()

    async def until(self, predicate) -> None:
        async with self.changed:
            await self.changed.wait_for(predicate)

    async def update(self, change) -> None:
        async with self.changed:
            change()
            self.changed.notify_all()

    async def park(self) -> None:
        """Wait for the next ``resume``."""
        gen = self.generation
        await self.update(lambda: setattr(self, "parked", self.parked + 1))
        await self.until(lambda: self.generation != gen)
        await self.update(lambda: setattr(self, "parked", self.parked - 1))

    async def resume(self, url: str | None = None) -> None:
        """Wake the parked streams (sending to ``url`` from now on, if given)."""

        def change() -> None:
            self.url = url or self.url
            self.generation += 1

        await self.update(change)

    async def ack(self, k: int, step: int) -> None:
        """Stream ``k`` was told it is at ``step``."""
        now = time.monotonic()

        def change() -> None:
            self.acked_at[k] += [now] * (step - self.acked[k])
            self.acked[k] = step

        await self.update(change)

    async def finished(self) -> None:
        await self.update(lambda: setattr(self, "done", self.done + 1))

    async def settled(self) -> None:
        """Until every stream is parked or done: none is between a request and its reply."""
        await self.until(lambda: self.parked + self.done == len(self.acked))
