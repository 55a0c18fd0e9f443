"""The batcher: a bounded queue that forms batches for one model version, in order per key.

Contract: the handler gets a list of :class:`Ticket` and returns a list of the same
length, each element a result, an exception, or :data:`RUN_AGAIN` for that ticket. The
batcher knows nothing of tensors. If the handler raises, or returns a list of another
length, every ticket of the batch fails.

Order per key: a ticket with a key (a session) runs only once the ticket of that key before
it has been answered; until then it waits behind it, off the queue. So a batch never holds
two tickets of one key, and a session's steps run one after the other, in arrival order,
without a lock. :data:`RUN_AGAIN` sends a ticket back to the head of the queue with its key
still held (a step whose write lost to another process runs again, before the session's
later steps).

Scheduling, with no task of its own: a submit that finds a slot free starts a batch, which
takes what is queued when it begins (the requests of the same event-loop turn go together);
a batch that ends starts the next. While a batch runs, requests queue up and go together as
soon as a slot frees; with several slots (``max_in_flight``) and one busy, a batch waits up
to ``max_queue_delay`` to fill before using the next slot. A batch never holds more than
``max_batch_size`` rows (a single larger request runs alone). The queue is bounded: a full
queue refuses at once with :class:`Overloaded`.

Deadlines: a ticket whose deadline passes while queued (or waiting behind its key) is
dropped, and its caller gets :class:`DeadlineExceeded`. Once in a batch, the handler calls
:meth:`Ticket.claim` before it makes a result durable (a session commit); a ticket that
timed out before that is not committed, and a ticket already claimed is awaited to the
end, so a 504 always means nothing changed.
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

RUN_AGAIN: Any = type("RunAgain", (), {"__repr__": lambda self: "RUN_AGAIN"})()
"""A handler's result for a ticket to run again in a later batch, ahead of its key's later tickets."""


class Ticket:
    __slots__ = ("_claimed", "cancelled", "deadline", "enqueued", "future", "key", "payload", "rows", "timeout")

    def __init__(
        self, payload: Any, rows: int, key: Hashable | None, future: asyncio.Future, deadline: float, timeout: float
    ) -> None:
        self.payload = payload
        self.rows = rows
        self.key = key
        self.future = future
        self.enqueued = time.monotonic()
        self.deadline = deadline  # the event loop's time past which it is not run, or not committed
        self.timeout = timeout
        self.cancelled = False
        self._claimed = False

    def claim(self) -> bool:
        """Mark the point of no return; False if the caller already gave up on this ticket."""
        if self.cancelled or self.future.cancelled():
            return False
        self._claimed = True
        return True


Handler = Callable[[list[Ticket]], Awaitable[list[Any]]]


def late(timeout: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the request was not served within its deadline of {timeout:g} s and was not applied "
        "(its session, if any, is unchanged)"
    )


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
        self._queue: collections.deque[Ticket] = collections.deque()  # runnable: no earlier ticket of its key
        self._behind: dict[Hashable, collections.deque[Ticket]] = {}  # per key held: the tickets waiting behind
        self._waiting = 0  # tickets waiting behind their key
        self._in_flight = 0  # batches started (a slot each)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Event | None = None
        self._running: set[asyncio.Task] = set()
        self._fill: asyncio.TimerHandle | None = None  # a batch waiting to fill, with other slots busy
        self._starting = False  # a batch is started and has not yet taken its requests
        self._stopping = False
        # deadlines: one timer for the earliest, not one per request (a timer per request cost
        # about a tenth of a step's CPU); answered tickets leave the heap lazily
        self._deadlines: list[tuple[float, int, Ticket]] = []
        self._order = itertools.count()
        self._watch: asyncio.TimerHandle | None = None

    # -- lifecycle (called from the running loop) ---------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()

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
        if self._fill is not None:
            self._fill.cancel()
            self._fill = None
        self._refuse_waiting()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._refuse_waiting()  # what the last batches sent back or let through meanwhile
        if self._watch is not None:  # deadlines are watched until the last batch is done
            self._watch.cancel()
            self._watch = None

    def _refuse_waiting(self) -> None:
        """Answer every queued request, and every one waiting behind its key, with 503."""
        waiting = [*self._queue, *(t for behind in self._behind.values() for t in behind)]
        self._queue.clear()
        for behind in self._behind.values():
            behind.clear()
        self._waiting = 0
        for t in waiting:
            if not t.future.done():
                t.future.set_exception(Overloaded("the service is shutting down"))
                self._obs.completed(False, time.monotonic() - t.enqueued)
            self._drop(t)

    @property
    def depth(self) -> int:
        return len(self._queue) + self._waiting

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self._waiting > 0 or self._in_flight > 0

    # -- submitting ----------------------------------------------------------------------
    def enqueue(self, payload: Any, *, rows: int = 1, key: Hashable | None = None, timeout: float) -> asyncio.Future:
        """Queue a request; its future gets the result. Raises Overloaded at once when the
        queue is full or the batcher stops. A caller that cancels the future gives the
        request up: it is not run (or not committed), and is counted as failed."""
        loop = self._loop
        assert loop is not None and self._idle is not None, "start() the batcher first"
        if self._stopping:
            self._obs.completed(False, 0.0)
            raise Overloaded("the service is shutting down")
        depth = len(self._queue) + self._waiting
        if depth >= self._max_queue:
            self._obs.completed(False, 0.0)
            raise Overloaded(f"the queue is full ({self._max_queue} requests waiting); retry shortly")
        ticket = Ticket(payload, rows, key, loop.create_future(), loop.time() + timeout, timeout)
        behind = self._behind.get(key) if key is not None else None
        if behind is not None:
            behind.append(ticket)
            self._waiting += 1
        else:
            if key is not None:
                self._behind[key] = collections.deque()
            self._queue.append(ticket)
        self._idle.clear()
        self._obs.queued(depth + 1)
        self._watch_deadline(loop, ticket)
        if not self._starting:
            self._kick()
        return ticket.future

    async def submit(self, payload: Any, *, rows: int = 1, key: Hashable | None = None, timeout: float) -> Any:
        """:meth:`enqueue`, and wait for the result."""
        return await self.enqueue(payload, rows=rows, key=key, timeout=timeout)

    def _drop(self, ticket: Ticket) -> None:
        """A ticket already answered (it expired) or given up (its caller cancelled it), found
        by the batcher: a given-up one is counted, once, and either frees its key."""
        if ticket.future.cancelled() and not ticket.cancelled:
            ticket.cancelled = True
            self._obs.completed(False, time.monotonic() - ticket.enqueued)
        self._release(ticket)

    def _watch_deadline(self, loop: asyncio.AbstractEventLoop, ticket: Ticket) -> None:
        at = ticket.deadline
        heapq.heappush(self._deadlines, (at, next(self._order), ticket))
        if self._watch is None or at < self._watch.when():
            if self._watch is not None:
                self._watch.cancel()
            self._watch = loop.call_at(at, self._expire_due)

    def _expire_due(self) -> None:
        """The earliest deadline came: expire every ticket past its own, then wait for the next."""
        loop = self._loop
        assert loop is not None
        now, heap = loop.time(), self._deadlines
        self._watch = None
        while heap and (heap[0][0] <= now or heap[0][2].future.done()):
            _, _, ticket = heapq.heappop(heap)
            if not ticket.future.done():
                self._expire(ticket)
        if heap:
            self._watch = loop.call_at(heap[0][0], self._expire_due)

    def _forget_answered(self) -> None:
        """Keep the deadline heap to about the tickets still waiting (after a batch): answered
        ones leave from its top, where requests with the usual timeout are (the earliest
        deadlines); all of them, amortised, once they outnumber the rest (mixed timeouts)."""
        heap = self._deadlines
        while heap and heap[0][2].future.done():
            heapq.heappop(heap)
        if len(heap) > 64 + 2 * (self.depth + self._in_flight * self._max_rows):
            heap[:] = [e for e in heap if not e[2].future.done()]
            heapq.heapify(heap)

    def _expire(self, ticket: Ticket) -> None:
        """The deadline passed: fail the ticket unless the handler has claimed it (then its
        result is the truth and the caller keeps waiting for it)."""
        if ticket._claimed or ticket.future.done():
            return
        ticket.cancelled = True
        ticket.future.set_exception(late(ticket.timeout))
        self._obs.completed(False, time.monotonic() - ticket.enqueued)

    # -- batches -------------------------------------------------------------------------
    def _kick(self, wait_to_fill: bool = True) -> None:
        """Start a batch if a slot is free and requests wait. The batch takes its requests when
        it begins, so one is started at a time: the next once it has taken them."""
        if self._starting or self._stopping or not self._queue or self._in_flight >= self._max_in_flight:
            return
        if wait_to_fill and self._in_flight > 0 and self._delay > 0 and self._rows_queued() < self._max_rows:
            # other slots are busy: wait for this batch to fill, up to the delay after its first request
            left = self._queue[0].enqueued + self._delay - time.monotonic()
            if left > 0:
                if self._fill is None:
                    assert self._loop is not None
                    self._fill = self._loop.call_later(left, self._filled)
                return
        if self._fill is not None:
            self._fill.cancel()
            self._fill = None
        self._in_flight += 1
        self._starting = True
        assert self._loop is not None
        task = self._loop.create_task(self._run())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _filled(self) -> None:
        self._fill = None
        self._kick(wait_to_fill=False)

    def _rows_queued(self) -> int:
        return sum(t.rows for t in self._queue)

    def _take(self) -> list[Ticket]:
        batch: list[Ticket] = []
        rows = 0
        now = time.monotonic()
        queue = self._queue
        while queue:
            t = queue[0]
            if t.future.done():  # expired or given up while queued
                queue.popleft()
                self._drop(t)
                continue
            if batch and rows + t.rows > self._max_rows:
                break
            queue.popleft()
            batch.append(t)
            rows += t.rows
        self._obs.queued(self.depth)
        if batch:
            self._obs.dispatched(batch, rows, now)
        return batch

    def _release(self, ticket: Ticket) -> None:
        """``ticket`` is answered: the next ticket of its key becomes runnable."""
        key = ticket.key
        if key is None:
            return
        behind = self._behind.get(key)
        if behind is None:
            return
        if behind:
            self._waiting -= 1
            self._queue.append(behind.popleft())
        else:
            del self._behind[key]

    async def _run(self) -> None:
        batch = self._take()
        self._starting = False
        self._kick()  # what did not fit may use another slot
        t0 = time.monotonic()
        results: list[Any] = []
        cancelled: BaseException | None = None
        try:
            if batch:
                results = await self._handler(batch)
                if len(results) != len(batch):
                    raise RuntimeError(f"batch handler returned {len(results)} results for {len(batch)} requests")
        except Exception as e:
            results = [e] * len(batch)
        except BaseException as e:  # cancelled (a forced exit): its requests are still answered
            cancelled = e
            results = [Overloaded("the service is shutting down")] * len(batch)
        finally:
            self._in_flight -= 1
            if batch:
                self._obs.finished(time.monotonic() - t0)
        # the next batch first: its task runs before the callers this batch wakes, so a batch
        # run on a worker thread computes while their replies are written (it takes its requests
        # when it begins: those of the keys answered below too); one run on the event loop
        # delays their replies by its call instead, but finds requests queued here only when
        # this batch was full or its store read waited
        self._kick()
        loop = self._loop
        assert loop is not None
        now = time.monotonic()
        ok_n = fail_n = 0
        ok_s = fail_s = 0.0
        again: list[Ticket] = []
        for t, r in zip(batch, results, strict=True):
            if t.future.done():  # expired (counted then) or given up
                self._drop(t)
                continue
            if r is RUN_AGAIN:
                t._claimed = False  # its next run claims it again, or times out
                if self._stopping:
                    r = Overloaded("the service is shutting down")
                elif loop.time() >= t.deadline:
                    r = late(t.timeout)
                else:
                    self._watch_deadline(loop, t)  # its deadline, watched again
                    again.append(t)
                    continue
            if isinstance(r, BaseException):
                t.future.set_exception(r)
                fail_n += 1
                fail_s += now - t.enqueued
            else:
                t.future.set_result(r)
                ok_n += 1
                ok_s += now - t.enqueued
            self._release(t)
        self._queue.extendleft(reversed(again))
        if ok_n:
            self._obs.completed(True, ok_s, ok_n)
        if fail_n:
            self._obs.completed(False, fail_s, fail_n)
        self._forget_answered()
        self._kick()  # the re-runs, when no batch was started above
        if not self.busy:
            assert self._idle is not None
            self._idle.set()
        if cancelled is not None:
            raise cancelled
