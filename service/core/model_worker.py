"""One model version at work: its runtime, its batcher and the batch handler.

The handler reads, runs and writes: for one batch it reads every session record in one
store call, asks :mod:`service.core.streams` per step whether it runs, is a retry to answer
from the stored reply, or is refused; runs all rows in one onnxruntime call; and writes
every new state in one compare-and-set store call (a sequence's start that finds no
sequence creates it instead; its end deletes it once its step is stored). Nothing is
written for a step that failed, timed out, or lost its compare-and-set; a step that lost it
and named no ``expected_step`` runs again in a later batch, before its session's next step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from typing import Any

import numpy as np

from service.batching import collate
from service.batching.batcher import RUN_AGAIN, Batcher, BatcherObserver, Ticket
from service.config import Settings
from service.core.streams import begin, decide, lost, settle
from service.core.work import PredictResult, StatelessWork, StepResult, StepWork
from service.errors import (
    STORE_ERRORS,
    DeadlineExceeded,
    ServiceError,
    store_unreachable,
)
from service.metrics import Metrics, Observer, adder, setter
from service.runtime.onnx_model import OnnxModel
from service.sessions.record import SessionRecord
from service.sessions.store import SessionStore

log = logging.getLogger("service.sessions")
INLINE_MEASURED_CAP_S = 0.001  # the most a batch may hold the event loop on the warm-up's measurement alone

# the phases of Triton's statistics, in the order the handler measures them
PHASES = ("compute_input", "compute_infer", "compute_output")


class _Observer(BatcherObserver):
    def __init__(self, metrics: Metrics, key: str) -> None:
        self.queued = setter(metrics.queue_depth.labels(key))  # type: ignore[method-assign,assignment]
        self.wait = Observer(metrics.queue_wait.labels(key))
        self.size = Observer(metrics.batch_size.labels(key))
        self.outcomes = {
            ok: (adder(metrics.infer_requests.labels(key, o)), adder(metrics.infer_request_seconds.labels(key, o)))
            for ok, o in ((True, "success"), (False, "fail"))
        }

    def dispatched(self, tickets: list[Ticket], rows: int, now: float) -> None:
        self.wait.many([now - t.enqueued for t in tickets])
        self.size(rows)

    def completed(self, ok: bool, seconds: float, n: int = 1) -> None:
        count, total = self.outcomes[ok]
        count(n)
        total(seconds)


class GrpcLoad:
    """The gRPC inference requests in progress in this process (a unary call, or a stream's
    message or run of messages, while it runs on the data plane), counted by the gRPC
    service: while any is, loaded batches run in the pool (:meth:`ModelWorker.loop_limit`)."""

    __slots__ = ("requests",)

    def __init__(self) -> None:
        self.requests = 0


class ModelWorker:
    def __init__(
        self, model: OnnxModel, store: SessionStore, settings: Settings, metrics: Metrics, grpc_load: GrpcLoad
    ) -> None:
        self.model = model
        self.card = model.card
        self.settings = settings  # this version's: the global settings with its card's batching overrides
        self.store = store
        self.metrics = metrics
        self.retired = False  # set when the version is unloaded: its batcher stops taking work
        self._executor = ThreadPoolExecutor(settings.inference_workers, thread_name_prefix=f"ort-{self.card.name}")
        # a batch may run on the event loop when it is under the setting, or when its rows cost
        # less than the hop to the worker thread and back (both measured at warm-up; on a small
        # virtual machine the hop costs more than a one-row call, and both figures are noisy,
        # so the call's fixed part is not weighed against the hop), and the loop had been quiet
        # (loop_limit); 0: never
        inline = settings.inline_compute_us / 1e6
        measured = min(model.call_s + model.hop_s, INLINE_MEASURED_CAP_S)  # a hop timed on a busy loop can read high
        self.inline_s = max(inline, measured) if inline > 0 else 0.0
        # under load too, while no gRPC request is in progress (loop_limit); with several
        # inference workers, loaded batches run side by side in the pool
        http = settings.http_inline_compute_us / 1e6
        on = http > 0 and inline > 0 and settings.inference_workers == 1
        self.http_inline_s = max(http, self.inline_s) if on else 0.0
        self.grpc_load = grpc_load
        self._free_since = float("-inf")  # when the last onnxruntime call ended (time.monotonic())
        self._last_call = 0.0  # and how long it took, from its start on the loop to its end
        self._inference = Observer(metrics.inference.labels(self.card.key))
        self._steps = adder(metrics.steps.labels(self.card.key))
        self._last = setter(metrics.last_inference.labels(self.card.key))
        self._phases = [
            (
                adder(metrics.phase_requests.labels(self.card.key, p)),
                adder(metrics.phase_seconds.labels(self.card.key, p)),
            )
            for p in PHASES
        ]
        self._execution: dict[int, tuple[Callable[[float], None], list[Callable[[float], None]]]] = {}
        self.batcher = Batcher(
            self.handle,
            max_batch_size=settings.max_batch_size,
            max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            max_in_flight=settings.inference_workers,
            observer=_Observer(metrics, self.card.key),
        )

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    def loop_limit(self, first_enqueued: float) -> float:
        """How long a batch may hold the event loop (its calls' estimates together; see
        :meth:`infer`), by when its first request was queued (``time.monotonic()``).

        While no gRPC request is in progress: :attr:`http_inline_s`, loaded or not. uvloop
        reads every ready connection in one turn, so the batch after one that held the loop
        takes all that arrived meanwhile, and each saves the hop to the worker thread.

        Otherwise :attr:`inline_s` when the loop had been quiet, at least as long after the
        last call as that call took; else 0, every call in the pool. A batch that came sooner
        was waiting while the loop was busy: run there, it would keep the gRPC requests
        arriving meanwhile from being read (grpc.aio hands the loop one new call per turn), and
        each batch after it would be as small."""
        if self.http_inline_s and not self.grpc_load.requests:
            return self.http_inline_s
        return self.inline_s if first_enqueued - self._free_since >= self._last_call else 0.0

    async def infer(
        self,
        xs: list[np.ndarray],
        state: np.ndarray,
        phases: list[float] | None = None,
        inline_s: float | None = None,
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Run requests' rows together: ``xs`` per request ``[n, T, F]``, from ``state [S, L,
        rows, H]`` (their rows' states, in order). Returns per request its ``y [n, T, O]`` (views
        into the call's outputs), and the new states of all rows, in the same order.

        Requests of several lengths run in the calls :func:`collate.calls` chooses by
        :meth:`call_cost` (padding a row to a longer one costs what the longer row does). The
        calls run on the event loop while their estimates add up to no more than ``inline_s``
        (default :attr:`inline_s`; see :meth:`loop_limit`): the limit bounds how long the batch
        holds the loop, not each call; the others run in the pool.

        Each onnxruntime call is counted by its batch size with its phases (collate, run,
        split); ``phases``, when given, accumulates those three times over the calls."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        limit = self.inline_s if inline_s is None else inline_s
        groups = collate.calls(
            [x.shape[1] for x in xs],
            [x.shape[0] for x in xs],
            (lambda rows, steps: self.call_cost(rows, steps, limit)) if self.model.has_lengths else None,
        )
        ys: list[Any] = [None] * len(xs)
        # one call of the requests in order takes the state as it is; calls of some of them, or
        # of them sorted by length, take their rows
        whole = len(groups) == 1 and groups[0] == list(range(len(xs)))
        new = state if whole else np.empty_like(state)
        firsts = [] if whole else [0, *accumulate(x.shape[0] for x in xs)]
        held = 0.0  # the estimates of the calls run on the loop so far
        for idx in groups:
            t_in = time.perf_counter()
            rows = [] if whole else [r for i in idx for r in range(firsts[i], firsts[i + 1])]
            b = collate.collate([xs[i] for i in idx], state if whole else state.take(rows, axis=2))
            t_run = time.perf_counter()
            estimate = self.model.estimate_s(b.x.shape[0], b.x.shape[1])
            if held + estimate <= limit:
                # cheaper than the hop to a thread and back: run on the event loop
                held += estimate
                y, out = self.model.run(b.x, b.state, b.lengths)
            else:
                y, out = await loop.run_in_executor(self._executor, self.model.run, b.x, b.state, b.lengths)
            t_out = time.perf_counter()
            self._free_since, self._last_call = time.monotonic(), t_out - t_run
            for i, yi in zip(idx, collate.split(b, y), strict=True):
                ys[i] = yi
            if whole:
                new = out
            else:
                new[:, :, rows] = out
            t_end = time.perf_counter()
            times = (t_run - t_in, t_out - t_run, t_end - t_out)
            self._record_execution(b.x.shape[0], times)
            if phases is not None:
                for k, v in enumerate(times):
                    phases[k] += v
        self._inference(time.perf_counter() - t0)
        return ys, new

    def call_cost(self, rows: int, steps: int, inline_s: float) -> float:
        """What one onnxruntime call of ``rows`` rows of ``steps`` steps costs where it runs: its
        estimate, and the hop to the worker thread and back for a call longer than ``inline_s``."""
        s = self.model.estimate_s(rows, steps)
        return s if s <= inline_s else s + self.model.hop_s

    def _record_execution(self, rows: int, times: tuple[float, float, float]) -> None:
        children = self._execution.get(rows)
        if children is None:
            size = str(rows)
            children = self._execution[rows] = (
                adder(self.metrics.executions.labels(self.card.key, size)),
                [adder(self.metrics.execution_seconds.labels(self.card.key, size, p)) for p in PHASES],
            )
        children[0](1)
        for add, seconds in zip(children[1], times, strict=True):
            add(seconds)

    def _record_phases(self, requests: int, times: list[float]) -> None:
        for (count, total), seconds in zip(self._phases, times, strict=True):
            count(requests)
            total(requests * seconds)

    async def handle(self, tickets: list[Ticket]) -> list[Any]:
        try:
            results = await self._handle(tickets)
        except STORE_ERRORS as e:
            raise store_unreachable(e) from e
        if any(not isinstance(r, BaseException) for r in results):
            self._last(time.time())  # once per batch: its requests finish together
        return results

    async def _handle(self, tickets: list[Ticket]) -> list[Any]:
        """Read, run, commit. A store that keeps the records it last wrote (Redis) answers the
        read from them without a round trip; any step that such a record would refuse, replay
        or fail to commit is read again and run again from the stored record, once."""
        results: list[Any] = [None] * len(tickets)
        phases = [0.0, 0.0, 0.0]  # compute_input, compute_infer, compute_output
        stateless = [i for i, t in enumerate(tickets) if isinstance(t.payload, StatelessWork)]
        pending = [i for i, t in enumerate(tickets) if isinstance(t.payload, StepWork)]
        trust = self.store.caches
        # a re-run (RUN_AGAIN) keeps its first enqueued time, so while a gRPC request is in
        # progress its batch goes to the pool: rare
        inline_s = self.loop_limit(min(t.enqueued for t in tickets))
        rows = 0
        while True:
            again, ran = await self._round(tickets, stateless, pending, trust, results, phases, inline_s)
            rows += ran
            if not again:
                break
            stateless, pending, trust = [], again, False
        if rows:
            self._record_phases(rows, phases)
        return results

    async def _round(
        self,
        tickets: list[Ticket],
        stateless: list[int],
        pending: list[int],
        trust: bool,
        results: list[Any],
        phases: list[float],
        inline_s: float,
    ) -> tuple[list[int], int]:
        """One read -> run -> commit over ``pending`` steps (and ``stateless`` rows); sets
        ``results``. Returns the steps to read again (only when ``trust``: cached reads, which
        a sequence's start never uses), and how many requests ran."""
        t0 = time.perf_counter()
        store = self.store
        again: list[int] = []
        records = await store.get_many([tickets[i].payload.session_id for i in pending], trust) if pending else []
        xs = [tickets[i].payload.x for i in stateless]
        states = [tickets[i].payload.state for i in stateless]
        owners: list[tuple[int, SessionRecord | None, bool]] = [(i, None, False) for i in stateless]
        steps_from: list[SessionRecord] = []  # the records the steps run from
        for i, rec in zip(pending, records, strict=True):
            work: StepWork = tickets[i].payload
            if trust and work.start:
                again.append(i)
                continue
            try:
                rec, new = begin(work, rec, self.card, store) if work.start else (rec, False)
                admitted = decide(work, rec, self.card, store)
            except ServiceError as e:
                if trust:  # refused on a copy that may be stale: ask the store itself
                    again.append(i)
                else:
                    results[i] = e
                continue
            if isinstance(admitted, StepResult):
                if trust:
                    again.append(i)
                else:
                    results[i] = admitted
                    if work.end:  # a retried last request ends its sequence, as the first try did
                        await self._end(work.session_id, work.owner)
                continue
            xs.append(work.x[None])
            steps_from.append(admitted)
            owners.append((i, admitted, new))
        if not xs:
            return again, 0
        # the states as read: the memory store's are rows of its arena, which only a store
        # write changes, and none came since the read (a retried sequence end's delete, of
        # another session, frees a row no create has taken)
        if steps_from:
            states.append(store.gather(steps_from))
        state = states[0] if len(states) == 1 else np.concatenate(states, axis=2)
        phases[0] += time.perf_counter() - t0  # store read and admission
        ys, new_state = await self.infer(xs, state, phases, inline_s)
        t_out = time.perf_counter()
        now = store.clock()
        # (ticket, record, new, its state after the step: a row of the batch's new states) per write
        commits: list[tuple[int, SessionRecord, bool, np.ndarray]] = []
        r = 0
        for (i, rec, new), y in zip(owners, ys, strict=True):
            n = y.shape[0]
            if rec is None:
                results[i] = PredictResult(np.ascontiguousarray(y), new_state[:, :, r : r + n].copy())  # own, not views
            else:
                row = new_state[:, :, r]
                try:
                    commits.append((i, settle(tickets[i], rec, row, y[0].copy(), now), new, row))
                except DeadlineExceeded as e:
                    results[i] = e
            r += n
        if commits:
            existing = [rec for _, rec, new, _ in commits if not new]
            written = iter(await store.commit_many(existing) if existing else [])
            steps = 0
            for i, rec, new, row in commits:
                work = tickets[i].payload
                if new:
                    ok = await self._create(rec, work.end)
                    if isinstance(ok, ServiceError):
                        results[i] = ok
                        continue
                elif not next(written):
                    if trust:
                        again.append(i)
                    else:
                        results[i] = lost(work) or RUN_AGAIN
                    continue
                elif work.end:
                    await self._end(rec.id, rec.owner)
                assert rec.last is not None
                results[i] = StepResult(rec.id, rec.last.outputs, rec.step, replayed=False, state=row)
                steps += len(rec.last.outputs)
            self._steps(steps)
        phases[2] += time.perf_counter() - t_out  # store write
        return again, len(owners)

    async def _create(self, rec: SessionRecord, end: bool) -> ServiceError | None:
        """Store a new sequence, within the capacity limits; the error when it could not be (the
        store full, or unreachable: that request alone fails). One that ends with its first
        request is counted and never stored."""
        if end:
            self.metrics.sessions_deleted.inc()
        else:
            try:
                await self.store.create(rec, self.settings.max_sessions, self.settings.max_sessions_per_key)
            except ServiceError as e:  # full, or the store unreachable (as the Redis store reports it)
                return e
            except STORE_ERRORS as e:
                return store_unreachable(e)
        self.metrics.sessions_created.inc()
        return None

    async def _end(self, session_id: str, owner: str | None) -> None:
        """Release a sequence whose last step is stored. Its step stands if the store cannot be
        reached now: the sequence then ends when it expires."""
        try:
            gone = await self.store.delete(session_id, owner)
        except (ServiceError, *STORE_ERRORS) as e:
            log.warning("could not release sequence %s after its last step (%s); it expires when idle", session_id, e)
            return
        if gone:
            self.metrics.sessions_deleted.inc()
