"""The batcher without HTTP or tensors. Deterministic: events gate the handler, and long
timeouts with ``asyncio.wait`` replace sleeping."""

from __future__ import annotations

import asyncio

import pytest

from service.batching.batcher import RUN_AGAIN, Batcher, BatcherObserver
from service.errors import DeadlineExceeded, Overloaded


class Gate:
    """A handler that records batches and, when closed, blocks until opened."""

    def __init__(self, closed: bool = False) -> None:
        self.batches: list[list] = []
        self.open = asyncio.Event()
        self.entered = asyncio.Event()
        if not closed:
            self.open.set()

    async def __call__(self, tickets):
        self.batches.append([t.payload for t in tickets])
        self.entered.set()
        await self.open.wait()
        return [(t.payload, t.claim()) for t in tickets]


def make(handler, **kw) -> Batcher:
    opts = {"max_batch_size": 8, "max_queue_delay_s": 100.0, "max_queue_size": 100} | kw
    b = Batcher(handler, **opts)
    b.start()
    return b


async def test_idle_runtime_dispatches_at_once_despite_long_delay():
    gate = Gate()
    b = make(gate)
    done, _ = await asyncio.wait({asyncio.ensure_future(b.submit("a", timeout=50))}, timeout=2)
    assert done and done.pop().result() == ("a", True)
    await b.stop()


async def test_requests_queue_while_busy_and_go_together():
    gate = Gate(closed=True)
    b = make(gate)
    first = asyncio.ensure_future(b.submit(0, timeout=50))
    await asyncio.wait_for(gate.entered.wait(), 2)
    rest = [asyncio.ensure_future(b.submit(i, timeout=50)) for i in range(1, 6)]
    await asyncio.sleep(0)
    gate.open.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert gate.batches == [[0], [1, 2, 3, 4, 5]]
    await b.stop()


async def test_max_batch_size_counts_rows_and_one_key_per_batch():
    gate = Gate(closed=True)
    b = make(gate, max_batch_size=4)
    first = asyncio.ensure_future(b.submit("x", timeout=50))
    await asyncio.wait_for(gate.entered.wait(), 2)
    futs = [
        asyncio.ensure_future(b.submit("k1-a", key="k1", timeout=50)),
        asyncio.ensure_future(b.submit("k1-b", key="k1", timeout=50)),
        asyncio.ensure_future(b.submit("big", rows=3, timeout=50)),
        asyncio.ensure_future(b.submit("k2", key="k2", timeout=50)),
    ]
    await asyncio.sleep(0)
    gate.open.set()
    await asyncio.wait_for(asyncio.gather(first, *futs), 5)
    assert gate.batches[1] == ["k1-a", "big"]  # k1-b waits behind k1-a (same key); k2 would exceed 4 rows
    assert sorted(gate.batches[2]) == ["k1-b", "k2"]  # k1-b joined the queue once k1-a was answered
    await b.stop()


async def test_full_queue_refuses_at_once():
    gate = Gate(closed=True)
    b = make(gate, max_queue_size=2)
    first = asyncio.ensure_future(b.submit(0, timeout=50))
    await asyncio.wait_for(gate.entered.wait(), 2)
    queued = [asyncio.ensure_future(b.submit(i, timeout=50)) for i in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="queue is full"):
        await asyncio.wait_for(b.submit(3, timeout=50), 1)
    gate.open.set()
    await asyncio.gather(first, *queued)
    await b.stop()


async def test_queued_request_past_deadline_is_never_run():
    gate = Gate(closed=True)
    b = make(gate)
    first = asyncio.ensure_future(b.submit("slow", timeout=50))
    await asyncio.wait_for(gate.entered.wait(), 2)
    with pytest.raises(DeadlineExceeded):
        await b.submit("late", timeout=0.05)
    gate.open.set()
    await first
    assert await b.drain(2)
    assert gate.batches == [["slow"]]
    await b.stop()


async def test_claimed_request_is_awaited_past_its_deadline():
    """Once the handler claims a ticket its result stands, even after the deadline."""
    release = asyncio.Event()

    async def handler(tickets):
        claimed = [t.claim() for t in tickets]
        await release.wait()
        return claimed

    b = make(handler)
    fut = asyncio.ensure_future(b.submit("x", timeout=0.05))
    await asyncio.sleep(0.2)
    assert not fut.done()
    release.set()
    assert await asyncio.wait_for(fut, 2) is True
    await b.stop()


async def test_handler_failure_fails_every_request_and_batcher_survives():
    calls = 0

    async def handler(tickets):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        if calls == 2:
            return []  # wrong length
        return [t.payload for t in tickets]

    b = make(handler)
    with pytest.raises(RuntimeError, match="boom"):
        await b.submit(1, timeout=5)
    with pytest.raises(RuntimeError, match="0 results for 1"):
        await b.submit(2, timeout=5)
    assert await b.submit(3, timeout=5) == 3
    await b.stop()


async def test_per_item_exceptions_go_to_their_own_caller():
    async def handler(tickets):
        return [ValueError(t.payload) if t.payload == "bad" else t.payload for t in tickets]

    b = make(handler)
    good, bad = await asyncio.gather(b.submit("good", timeout=5), b.submit("bad", timeout=5), return_exceptions=True)
    assert good == "good" and isinstance(bad, ValueError)
    await b.stop()


class Outcomes(BatcherObserver):
    def __init__(self) -> None:
        self.seen: list[bool] = []

    def completed(self, ok: bool, seconds: float, n: int = 1) -> None:
        assert seconds >= 0 and n >= 1
        self.seen += [ok] * n


async def test_observer_sees_every_request_end_with_its_outcome():
    """What the statistics extension's success/fail counts rest on: every submit counted once."""
    gate = Gate(closed=True)
    obs = Outcomes()
    b = make(gate, max_queue_size=1, observer=obs)
    running = asyncio.ensure_future(b.submit("ok", timeout=50))
    await asyncio.wait_for(gate.entered.wait(), 2)
    expiring = asyncio.ensure_future(b.submit("late", timeout=0.05))  # fills the queue, then expires
    await asyncio.sleep(0)  # let it enqueue
    assert b.depth == 1
    with pytest.raises(Overloaded):
        await b.submit("refused", timeout=50)
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(expiring, 5)
    gate.open.set()
    assert await asyncio.wait_for(running, 5) == ("ok", True)
    assert obs.seen == [False, False, True]
    await b.stop()


async def test_answered_requests_leave_the_deadline_watch():
    """One timer watches the earliest deadline; answered requests do not pile up behind it
    (10,000 answered, each with a long deadline: the watch keeps about the live ones)."""
    b = make(Gate(), max_batch_size=16)
    for start in range(0, 10_000, 100):
        await asyncio.wait_for(asyncio.gather(*(b.submit(i, timeout=3600) for i in range(start, start + 100))), 10)
    assert len(b._deadlines) <= 64 + 2 * 16, len(b._deadlines)
    await b.stop()


async def test_a_key_runs_one_ticket_at_a_time_even_with_free_slots():
    """Per-key order without a lock: with two slots, a key's second ticket waits until its first
    is answered, while another key's ticket takes the free slot."""
    gate = Gate(closed=True)
    b = make(gate, max_in_flight=2, max_queue_delay_s=0.0)
    first = asyncio.ensure_future(b.submit("s-1", key="s", timeout=50))
    await asyncio.wait_for(gate.entered.wait(), 2)
    second = asyncio.ensure_future(b.submit("s-2", key="s", timeout=50))
    other = asyncio.ensure_future(b.submit("t-1", key="t", timeout=50))
    for _ in range(5):
        await asyncio.sleep(0)
    assert gate.batches == [["s-1"], ["t-1"]]  # s-2 waits behind s-1, off the queue
    assert b.depth == 1 and not second.done()
    gate.open.set()
    await asyncio.wait_for(asyncio.gather(first, second, other), 5)
    assert gate.batches[2] == ["s-2"]
    await b.stop()


async def test_run_again_goes_before_the_keys_later_tickets():
    seen: list[str] = []
    runs = 0

    async def handler(tickets):
        nonlocal runs
        runs += 1
        seen.extend(t.payload for t in tickets)
        return [RUN_AGAIN if t.payload == "s-1" and runs == 1 else t.payload for t in tickets]

    b = make(handler)
    results = await asyncio.wait_for(
        asyncio.gather(*(b.submit(p, key="s", timeout=50) for p in ("s-1", "s-2", "s-3"))), 5
    )
    assert results == ["s-1", "s-2", "s-3"]
    assert seen == ["s-1", "s-1", "s-2", "s-3"]  # the re-run came before s-2
    await b.stop()


async def test_a_ticket_given_up_behind_its_key_frees_the_key():
    gate = Gate(closed=True)
    b = make(gate)
    first = asyncio.ensure_future(b.submit("s-1", key="s", timeout=50))
    await asyncio.wait_for(gate.entered.wait(), 2)
    given_up = asyncio.ensure_future(b.submit("s-2", key="s", timeout=50))
    expired = asyncio.ensure_future(b.submit("s-3", key="s", timeout=0.01))
    last = asyncio.ensure_future(b.submit("s-4", key="s", timeout=50))
    await asyncio.sleep(0)
    given_up.cancel()
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(expired, 5)
    gate.open.set()
    assert await asyncio.wait_for(last, 5) == ("s-4", True)
    await first
    assert gate.batches == [["s-1"], ["s-4"]]  # neither the given-up nor the expired one ran
    assert await b.drain(2) and not b.busy and not b._behind
    await b.stop()


async def test_a_re_run_does_not_outlive_its_deadline():
    """A ticket the handler claimed and then sent back (RUN_AGAIN: its write lost to another
    process) runs again only within its deadline; past it, 504, whatever the handler does."""
    runs = 0

    async def handler(tickets):
        nonlocal runs
        runs += 1
        for t in tickets:
            t.claim()
        await asyncio.sleep(0.01)
        return [RUN_AGAIN] * len(tickets)

    obs = Outcomes()
    b = make(handler, observer=obs)
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(b.submit("x", key="s", timeout=0.05), 2)
    assert await b.drain(2) and not b._behind
    assert 2 <= runs <= 10 and obs.seen == [False]
    await b.stop()


async def test_stop_answers_the_re_runs_of_the_last_batch():
    entered, release = asyncio.Event(), asyncio.Event()

    async def handler(tickets):
        entered.set()
        await release.wait()
        return [RUN_AGAIN] * len(tickets)

    obs = Outcomes()
    b = make(handler, observer=obs)
    fut = asyncio.ensure_future(b.submit("x", key="s", timeout=50))
    await asyncio.wait_for(entered.wait(), 2)
    stopping = asyncio.ensure_future(b.stop())
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(stopping, 2)
    with pytest.raises(Overloaded, match="shutting down"):
        await asyncio.wait_for(fut, 2)
    assert obs.seen == [False] and not b.busy


async def test_a_cancelled_batch_still_answers_its_requests():
    entered = asyncio.Event()

    async def handler(tickets):
        entered.set()
        await asyncio.Event().wait()  # never returns

    b = make(handler)
    fut = asyncio.ensure_future(b.submit("x", key="s", timeout=50))
    await asyncio.wait_for(entered.wait(), 2)
    (task,) = b._running
    task.cancel()
    with pytest.raises(Overloaded, match="shutting down"):
        await asyncio.wait_for(fut, 2)
    assert not b.busy and not b._behind
    await b.stop()
