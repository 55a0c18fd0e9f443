"""The batcher: a bounded queue and a worker that forms batches for one model version.

Contract: the handler gets a list of :class:`Ticket` and returns a list of the same
length, each element a result or an exception for that ticket. The batcher knows nothing
of tensors. If the handler raises, or returns a list of another length, every ticket of
the batch fails.

Scheduling: when the runtime is idle, a batch is dispatched at once with whatever is
queued (no added latency at low load). While a batch runs, requests queue up and go
together as soon as a slot frees; with several slots (``max_in_flight``) and one busy, the
worker waits up to ``max_queue_delay`` for a batch to fill before using the next slot. A
batch never holds more than ``max_batch_size`` rows (a single larger request runs alone),
and never two tickets with the same key (the second waits for the next batch). The queue is
bounded: a full queue refuses at once with :class:`Overloaded`.

Deadlines: a ticket whose deadline passes while queued is dropped, and its caller gets
:class:`DeadlineExceeded`. Once in a batch, the handler calls :meth:`Ticket.claim` before it
makes a result durable (a session commit); a ticket that timed out before that is not
committed, and a ticket already claimed is awaited to the end, so a 504 always means
nothing changed.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from service.errors import DeadlineExceeded, Overloaded


class Ticket:
    __slots__ = ("_claimed", "cancelled", "enqueued", "future", "key", "payload", "rows")

    def __init__(self, payload: Any, rows: int, key: Hashable | None, future: asyncio.Future) -> None:
        self.payload = payload
        self.rows = rows
        self.key = key
        self.future = future
        self.enqueued = time.monotonic()
        self.cancelled = False
        self._claimed = False

    def claim(self) -> bool:
        """Mark the point of no return; False if the caller already gave up on this ticket."""
        if self.cancelled:
            return False
        self._claimed = True
        return True


Handler = Callable[[list[Ticket]], Awaitable[list[Any]]]


class BatcherObserver:
    """Hooks for metrics; the default does nothing."""

    def queued(self, depth: int) -> None: ...
    def dispatched(self, tickets: list[Ticket], rows: int, now: float) -> None: ...
    def finished(self, seconds: float) -> None: ...
    def completed(self, ok: bool, seconds: float, n: int = 1) -> None:
        """``n`` submitted requests got their result (``ok``) or failed, ``seconds`` after
        their submits in all (reported once per batch for those a batch answered)."""


class Batcher:
    def __init__(
        self,
        handler: Handler,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        max_in_flight: int = 1,
        observer: BatcherObserver | None = None,
    ) -> None:
        self._handler = handler
        self._max_rows = max_batch_size
        self._delay = max_queue_delay_s
        self._max_queue = max_queue_size
        self._max_in_flight = max_in_flight
        self._obs = observer or BatcherObserver()
        self._queue: collections.deque[Ticket] = collections.deque()
        self._in_flight = 0
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._stopping = False
        # deadlines: one timer for the earliest, not one per request (a timer per request cost
        # about a tenth of a step's CPU); answered tickets leave the heap lazily
        self._deadlines: list[tuple[float, int, Ticket, float]] = []
        self._order = itertools.count()
        self._watch: asyncio.TimerHandle | None = None

    # -- lifecycle (called from the running loop) ---------------------------------------
    def start(self) -> None:
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; True if that happened in time."""
        assert self._idle is not None
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for t in list(self._queue):
            if not t.future.done():
                t.future.set_exception(Overloaded("the service is shutting down"))
                self._obs.completed(False, time.monotonic() - t.enqueued)
        self._queue.clear()
        await asyncio.gather(*self._running, return_exceptions=True)
        if self._watch is not None:  # deadlines are watched until the last batch is done
            self._watch.cancel()
            self._watch = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self._in_flight > 0

    # -- submitting ----------------------------------------------------------------------
    async def submit(self, payload: Any, *, rows: int = 1, key: Hashable | None = None, timeout: float) -> Any:
        assert self._wake is not None and self._idle is not None, "start() the batcher first"
        if self._stopping:
            self._obs.completed(False, 0.0)
            raise Overloaded("the service is shutting down")
        if len(self._queue) >= self._max_queue:
            self._obs.completed(False, 0.0)
            raise Overloaded(f"the queue is full ({self._max_queue} requests waiting); retry shortly")
        loop = asyncio.get_running_loop()
        ticket = Ticket(payload, rows, key, loop.create_future())
        self._queue.append(ticket)
        self._idle.clear()
        self._obs.queued(len(self._queue))
        self._wake.set()
        self._watch_deadline(loop, ticket, timeout)
        try:
            return await ticket.future
        except asyncio.CancelledError:  # the caller gave up: its ticket is dropped, counted here
            if ticket.future.cancelled():
                self._obs.completed(False, time.monotonic() - ticket.enqueued)
            raise

    def _watch_deadline(self, loop: asyncio.AbstractEventLoop, ticket: Ticket, timeout: float) -> None:
        at = loop.time() + timeout
        heapq.heappush(self._deadlines, (at, next(self._order), ticket, timeout))
        if self._watch is None or at < self._watch.when():
            if self._watch is not None:
                self._watch.cancel()
            self._watch = loop.call_at(at, self._expire_due)

    def _expire_due(self) -> None:
        """The earliest deadline came: expire every ticket past its own, then wait for the next."""
        loop = asyncio.get_running_loop()
        now, heap = loop.time(), self._deadlines
        self._watch = None
        while heap and (heap[0][0] <= now or heap[0][2].future.done()):
            _, _, ticket, timeout = heapq.heappop(heap)
            if not ticket.future.done():
                self._expire(ticket, timeout)
        if heap:
            self._watch = loop.call_at(heap[0][0], self._expire_due)

    def _forget_answered(self) -> None:
        """Keep the deadline heap to about the tickets still waiting: answered ones are dropped
        once they outnumber the rest (amortised, after a batch)."""
        heap = self._deadlines
        if len(heap) > 64 + 2 * (len(self._queue) + self._in_flight * self._max_rows):
            heap[:] = [e for e in heap if not e[2].future.done()]
            heapq.heapify(heap)

    def _expire(self, ticket: Ticket, timeout: float) -> None:
        """The deadline passed: fail the ticket unless the handler has claimed it (then its
        result is the truth and the caller keeps waiting for it)."""
        if ticket._claimed or ticket.future.done():
            return
        ticket.cancelled = True
        ticket.future.set_exception(
            DeadlineExceeded(f"the request was not served within its deadline of {timeout:g} s")
        )
        self._obs.completed(False, time.monotonic() - ticket.enqueued)

    # -- the worker ----------------------------------------------------------------------
    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            while not self._queue or self._in_flight >= self._max_in_flight:
                self._wake.clear()
                await self._wake.wait()
            # a slot is free: take what is there now; wait briefly only if more slots are busy
            if self._in_flight > 0 and self._rows_queued() < self._max_rows and self._delay > 0:
                deadline = self._queue[0].enqueued + self._delay
                while self._rows_queued() < self._max_rows and (left := deadline - time.monotonic()) > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), left)
                    except TimeoutError:
                        break
            batch = self._take()
            if not batch:
                if self._in_flight == 0 and self._idle is not None:
                    self._idle.set()
                continue
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _rows_queued(self) -> int:
        return sum(t.rows for t in self._queue)

    def _take(self) -> list[Ticket]:
        batch: list[Ticket] = []
        deferred: list[Ticket] = []
        keys: set[Hashable] = set()
        rows = 0
        now = time.monotonic()
        while self._queue:
            t = self._queue[0]
            if t.cancelled or t.future.done():
                self._queue.popleft()
                continue
            if batch and rows + t.rows > self._max_rows:
                break
            self._queue.popleft()
            if t.key is not None and t.key in keys:
                deferred.append(t)
                continue
            if t.key is not None:
                keys.add(t.key)
            batch.append(t)
            rows += t.rows
        self._queue.extendleft(reversed(deferred))
        self._obs.queued(len(self._queue))
        if batch:
            self._obs.dispatched(batch, rows, now)
        return batch

    async def _run(self, batch: list[Ticket]) -> None:
        t0 = time.monotonic()
        try:
            results = await self._handler(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"batch handler returned {len(results)} results for {len(batch)} requests")
        except Exception as e:
            results = [e] * len(batch)
        finally:
            self._in_flight -= 1
            self._obs.finished(time.monotonic() - t0)
            assert self._wake is not None and self._idle is not None
            self._wake.set()
            if not self._queue and self._in_flight == 0:
                self._idle.set()
        now = time.monotonic()
        ok_n = fail_n = 0
        ok_s = fail_s = 0.0
        for t, r in zip(batch, results, strict=True):
            if t.future.done():  # expired or given up: counted then
                continue
            if isinstance(r, BaseException):
                t.future.set_exception(r)
                fail_n += 1
                fail_s += now - t.enqueued
            else:
                t.future.set_result(r)
                ok_n += 1
                ok_s += now - t.enqueued
        if ok_n:
            self._obs.completed(True, ok_s, ok_n)
        if fail_n:
            self._obs.completed(False, fail_s, fail_n)
        self._forget_answered()
