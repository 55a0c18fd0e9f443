"""One model version at work: its runtime, its batcher and the batch handler.

The handler is where sessions meet the runtime: for one batch it reads every session
record in one store call, decides per step whether it runs, is a retry to answer from the
stored reply, or is refused; runs all rows in one onnxruntime call; and writes every new
state in one compare-and-set store call. Nothing is written for a step that failed,
timed out, or lost its compare-and-set.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from service.batching import collate
from service.batching.batcher import Batcher, BatcherObserver, Ticket
from service.config import Settings
from service.core.work import PredictResult, StaleWrite, StatelessWork, StepResult, StepWork
from service.errors import DeadlineExceeded, ServiceError, SessionNotFound, StepConflict
from service.metrics import Metrics
from service.runtime.onnx_model import OnnxModel
from service.sessions.record import SessionRecord
from service.sessions.store import SessionStore


class _Observer(BatcherObserver):
    def __init__(self, metrics: Metrics, key: str) -> None:
        self.depth = metrics.queue_depth.labels(key)
        self.wait = metrics.queue_wait.labels(key)
        self.size = metrics.batch_size.labels(key)

    def queued(self, depth: int) -> None:
        self.depth.set(depth)

    def dispatched(self, tickets: list[Ticket], rows: int, now: float) -> None:
        for t in tickets:
            self.wait.observe(now - t.enqueued)
        self.size.observe(rows)


def unknown_session(session_id: str, ttl_s: float) -> SessionNotFound:
    return SessionNotFound(
        f"session {session_id!r} is unknown or has expired (sessions expire after {ttl_s:g} s without a step); "
        "create a new session"
    )


class ModelWorker:
    def __init__(self, model: OnnxModel, store: SessionStore, settings: Settings, metrics: Metrics) -> None:
        self.model = model
        self.card = model.card
        self.store = store
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(settings.inference_workers, thread_name_prefix=f"ort-{self.card.name}")
        self._inline_s = settings.inline_compute_us / 1e6
        self._inference = metrics.inference.labels(self.card.key)
        self._steps = metrics.steps.labels(self.card.key)
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

    async def infer(self, xs: list[np.ndarray], states: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Run requests' rows together, off the event loop; per request ``(y, state)``."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        # without per-row lengths in the model, one call per distinct length
        groups = [list(range(len(xs)))] if self.model.has_lengths else collate.group_by_length([x.shape[1] for x in xs])
        out: list[Any] = [None] * len(xs)
        for idx in groups:
            b = collate.collate([xs[i] for i in idx], [states[i] for i in idx])
            if b.x.shape[0] * b.x.shape[1] * self.model.row_step_s <= self._inline_s:
                # cheaper than the hop to a thread and back: run on the event loop
                y, hn, cn = self.model.run(b.x, b.h0, b.c0, b.lengths)
            else:
                y, hn, cn = await loop.run_in_executor(self._executor, self.model.run, b.x, b.h0, b.c0, b.lengths)
            for i, res in zip(idx, collate.split(b, y, hn, cn), strict=True):
                out[i] = res
        self._inference.observe(time.perf_counter() - t0)
        return out

    def _admit(self, work: StepWork, rec: SessionRecord | None) -> SessionRecord | StepResult:
        """The stored record to step from, or the stored reply of a retried request."""
        if rec is None or (rec.owner is not None and rec.owner != work.owner):
            raise unknown_session(work.session_id, self.store.ttl_s)
        e = work.expected_step
        if e is None or e == rec.step:
            return rec
        last = rec.last
        if last is not None and e == last.from_step and work.digest == last.digest:
            return StepResult(rec.id, last.outputs, rec.step, replayed=True, state=rec.state)
        raise StepConflict(
            f"expected_step {e} does not match the session, which is at step {rec.step}"
            + (" (and this is not a retry of its last request)" if e < rec.step else ""),
            current_step=rec.step,
        )

    async def handle(self, tickets: list[Ticket]) -> list[Any]:
        results: list[Any] = [None] * len(tickets)
        step_idx = [i for i, t in enumerate(tickets) if isinstance(t.payload, StepWork)]
        records = await self.store.get_many([tickets[i].payload.session_id for i in step_idx]) if step_idx else []
        xs: list[np.ndarray] = []
        states: list[np.ndarray] = []
        owners: list[tuple[int, SessionRecord | None]] = []
        for i, t in enumerate(tickets):
            if isinstance(t.payload, StatelessWork):
                xs.append(t.payload.x)
                states.append(t.payload.state)
                owners.append((i, None))
        for i, rec in zip(step_idx, records, strict=True):
            work: StepWork = tickets[i].payload
            try:
                admitted = self._admit(work, rec)
            except ServiceError as e:
                results[i] = e
                continue
            if isinstance(admitted, StepResult):
                results[i] = admitted
                continue
            xs.append(work.x[None])
            states.append(admitted.state[:, :, None, :])
            owners.append((i, admitted))
        if not xs:
            return results
        outs = await self.infer(xs, states)
        now = time.time()
        commits: list[SessionRecord] = []
        commit_idx: list[tuple[int, np.ndarray]] = []  # (ticket, outputs) per commit
        for (i, rec), (y, state) in zip(owners, outs, strict=True):
            if rec is None:
                results[i] = PredictResult(y, state)
            elif not tickets[i].claim():
                results[i] = DeadlineExceeded("the request's deadline passed before its step was stored")
            else:
                outputs = y[0].copy()
                commits.append(rec.advanced(state[:, :, 0, :].copy(), outputs, tickets[i].payload.digest, now))
                commit_idx.append((i, outputs))
        if commits:
            oks = await self.store.commit_many(commits)
            for (i, outputs), ok, new in zip(commit_idx, oks, commits, strict=True):
                if ok:
                    results[i] = StepResult(new.id, outputs, new.step, replayed=False, state=new.state)
                    self._steps.inc(len(outputs))
                else:
                    results[i] = StaleWrite(
                        "the session was advanced by another request at the same time; retry with its current step"
                    )
        return results
