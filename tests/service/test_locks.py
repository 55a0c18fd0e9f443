"""Per-session locks: one holder at a time, in arrival order, gone when nobody holds or waits."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.core.locks import KeyedLocks
from service.errors import DeadlineExceeded


def soon(seconds: float) -> float:
    """A deadline ``seconds`` from now, as the locks take it."""
    return time.monotonic() + seconds


async def test_one_holder_at_a_time_in_order_and_nothing_left_behind():
    locks = KeyedLocks()
    order: list[int] = []

    async def hold(i: int) -> None:
        async with locks.hold("s", soon(5)):
            order.append(i)
            await asyncio.sleep(0)
            order.append(i)

    await asyncio.gather(*(hold(i) for i in range(5)), hold_other(locks))
    assert order == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert len(locks) == 0


async def hold_other(locks: KeyedLocks) -> None:
    async with locks.hold("other", soon(5)):  # another key never waits for "s"
        assert len(locks) == 2


async def test_a_wait_past_the_deadline_is_refused_and_forgotten():
    locks = KeyedLocks()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("s", soon(5)):
            await release.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0)
    with pytest.raises(DeadlineExceeded, match="behind earlier steps"):
        async with locks.hold("s", soon(0.01)):
            pass
    release.set()
    await task
    assert len(locks) == 0


async def test_a_cancelled_waiter_leaves_no_lock_behind():
    locks = KeyedLocks()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("s", soon(5)):
            await release.wait()

    async def waiter() -> None:
        async with locks.hold("s", soon(5)):
            pass

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    release.set()
    await first
    assert len(locks) == 0
    async with locks.hold("s", soon(5)):  # and the key works again
        pass
