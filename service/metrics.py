"""Every Prometheus metric of the service, on a registry of its own (one per app)."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.values import MutexValue

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def merged(registry: CollectorRegistry) -> CollectorRegistry:
    """``registry`` itself; with several workers (``PROMETHEUS_MULTIPROC_DIR`` set by the
    supervisor) a registry that reads every worker's values from their files and sums them,
    whichever worker asks; gauges combine as each one's ``multiprocess_mode`` says."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return registry
    out = CollectorRegistry()
    multiprocess.MultiProcessCollector(out, path)
    return out


def exposition(registry: CollectorRegistry) -> bytes:
    """The text ``/metrics`` serves: every worker's figures."""
    return generate_latest(merged(registry))


def collected(registry: CollectorRegistry) -> dict[str, Metric]:
    """Every metric family of ``registry`` by name, read once (with several workers, summed
    over all of them: Triton's statistics extension, computed from these, covers every worker)."""
    return {f.name: f for f in merged(registry).collect()}


class LoopValue:
    """A metric's value written from the event loop's thread alone, so without the lock the
    library's value takes on every write (which costs more than the write). Read from any
    thread (a float's read is atomic). With several workers the library's file-backed
    values stay: they are shared with the process that reads them."""

    __slots__ = ("_exemplar", "_value")

    def __init__(self, value: float, exemplar: Any) -> None:
        self._value = value
        self._exemplar = exemplar

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> Any:
        return self._exemplar


def _unlocked(value: Any) -> Any:
    """``value``, or the :class:`LoopValue` that takes its place (carrying what it held)."""
    if type(value) is MutexValue:
        return LoopValue(value.get(), value.get_exemplar())
    return value


def _own(child: Any, attr: str) -> Any:
    """A child's value for the hot path's writes, made a :class:`LoopValue` the first time
    (in place: the library reads and writes it by its attribute, so nothing is lost; every
    later writer, this helper's or the library's, finds the same object)."""
    value = getattr(child, attr)
    new = _unlocked(value)
    if new is not value:
        setattr(child, attr, new)
    return new


def adder(child: Any) -> Callable[[float], None]:
    """``inc`` of a counter's labelled child, without the library's checks (or, in one
    process, its lock) on every call, which cost more than the increment; for the hot path,
    on the event loop's thread."""
    return _own(child, "_value").inc


def setter(child: Any) -> Callable[[float], None]:
    """``set`` of a gauge's labelled child, as :func:`adder` (not for ``set_to_current_time``)."""
    return _own(child, "_value").set


class Observer:
    """``observe`` of a histogram's labelled child, as :func:`adder`: its sum, and the first
    bucket whose bound holds the value (found by bisection, not a scan of every bound)."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Any) -> None:
        self._sum = _own(child, "_sum").inc
        self._bounds = list(child._upper_bounds)
        child._buckets = [_unlocked(b) for b in child._buckets]
        self._buckets = [b.inc for b in child._buckets]

    def __call__(self, value: float, n: int = 1) -> None:
        """Observe ``value`` (``n`` times: the requests of one run, answered together)."""
        self._sum(value * n)
        self._buckets[bisect_left(self._bounds, value)](n)

    def many(self, values: Iterable[float]) -> None:
        """Observe every value, adding to each bucket once (values of one batch mostly share
        a few buckets)."""
        counts: dict[int, int] = {}
        total = 0.0
        bounds = self._bounds
        for v in values:
            total += v
            i = bisect_left(bounds, v)
            counts[i] = counts.get(i, 0) + 1
        if counts:
            self._sum(total)
            for i, n in counts.items():
                self._buckets[i](n)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # no ``*_created`` series: a creation timestamp per counter is noise to every dashboard here
        disable_created_metrics()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lstm_requests", "Requests handled, by route template and status", ["route", "method", "status"], registry=r
        )
        self.request_duration = Histogram(
            "lstm_request_duration_seconds", "Request latency", ["route", "method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "lstm_queue_wait_seconds",
            "Time from enqueue to batch dispatch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "lstm_inference_seconds", "onnxruntime time per batch", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "lstm_batch_size", "Rows per onnxruntime call", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "lstm_queue_depth", "Requests waiting for a batch", ["model"], registry=r, multiprocess_mode="livesum"
        )
        self.sessions_live = Gauge(
            "lstm_sessions_live",
            "Live sessions in this process's store view",
            registry=r,
            multiprocess_mode="mostrecent",  # set from the store by whichever worker answers a scrape
        )
        self.sessions_created = Counter("lstm_sessions_created", "Sessions created", registry=r)
        self.sessions_expired = Counter("lstm_sessions_expired", "Sessions removed after their idle TTL", registry=r)
        self.sessions_deleted = Counter("lstm_sessions_deleted", "Sessions deleted by clients", registry=r)
        self.sessions_restored = Counter(
            "lstm_sessions_restored", "Sessions loaded from the state file at start (LSTM_STATE_DIR)", registry=r
        )
        self.sessions_refused = Counter(
            "lstm_sessions_refused",
            "Sessions of the state file refused at start: model (version not served), checksum (model changed), "
            "expired, file (the whole file was damaged: counts 1)",
            ["reason"],
            registry=r,
        )
        self.steps = Counter("lstm_steps", "Time steps consumed by sessions", ["model"], registry=r)
        self.state_bytes = Gauge(
            "lstm_session_state_bytes",
            "Bytes of (h, C) state per session",
            ["model"],
            registry=r,
            multiprocess_mode="max",
        )
        self.model_info = Gauge(
            "lstm_model_info",
            "Loaded model versions and the execution provider in use",
            ["model", "version", "provider"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.ready = Gauge(
            "lstm_ready", "1 when the service is ready to take traffic", registry=r, multiprocess_mode="livemin"
        )
        # Triton's statistics extension (GET /v2/models/.../stats) is computed from these and
        # queue_wait, in service/api/protocol/statistics.py, so /stats and /metrics agree by construction.
        self.infer_requests = Counter(
            "lstm_inference_requests",
            "Requests that reached a model version's batcher, by outcome (success or fail)",
            ["model", "outcome"],
            registry=r,
        )
        self.infer_request_seconds = Counter(
            "lstm_inference_request_seconds",
            "Cumulative time of those requests, from entering the batcher to their result",
            ["model", "outcome"],
            registry=r,
        )
        self.phase_requests = Counter(
            "lstm_inference_phase_requests",
            "Requests through each phase of their batch: compute_input (store read, collate), "
            "compute_infer (onnxruntime), compute_output (split, store write)",
            ["model", "phase"],
            registry=r,
        )
        self.phase_seconds = Counter(
            "lstm_inference_phase_seconds",
            "Cumulative time requests spent in each phase (a batch's phase counts once per request in it)",
            ["model", "phase"],
            registry=r,
        )
        self.executions = Counter(
            "lstm_executions", "onnxruntime calls, by batch size (rows)", ["model", "batch_size"], registry=r
        )
        self.execution_seconds = Counter(
            "lstm_execution_seconds",
            "Cumulative time of onnxruntime calls' phases, by batch size",
            ["model", "batch_size", "phase"],
            registry=r,
        )
        self.last_inference = Gauge(
            "lstm_last_inference_timestamp_seconds",
            "When a request to the model version last succeeded (Unix time)",
            ["model"],
            registry=r,
            multiprocess_mode="max",
        )
