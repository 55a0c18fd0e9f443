"""Triton's statistics extension, computed from the Prometheus metrics of :mod:`service.metrics`.

Nothing is counted twice: ``/v2/models/.../stats`` (and gRPC ``ModelStatistics``) read the
very counters that ``/metrics`` exposes, so the two always agree.

| statistic | metric |
|---|---|
| ``inference_stats.success`` / ``fail`` | ``lstm_inference_requests_total`` and ``lstm_inference_request_seconds_total`` by ``outcome`` |
| ``inference_stats.queue`` | ``lstm_queue_wait_seconds`` (count, sum) |
| ``inference_stats.compute_{input,infer,output}`` | ``lstm_inference_phase_requests_total`` and ``lstm_inference_phase_seconds_total`` by ``phase`` |
| ``batch_stats`` | ``lstm_executions_total`` and ``lstm_execution_seconds_total`` by ``batch_size`` (and ``phase``) |
| ``execution_count`` / ``inference_count`` | sum of ``lstm_executions_total`` / of ``batch_size`` times it |
| ``last_inference`` (ms since the epoch) | ``lstm_last_inference_timestamp_seconds`` |
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from service.metrics import Metrics
from service.runtime.repository import ModelCard

PHASES = ("compute_input", "compute_infer", "compute_output")


def _samples(
    fams: dict[str, Metric], metric: MetricWrapperBase, model: str, suffix: str
) -> list[tuple[dict[str, str], float]]:
    """``(labels, value)`` of a metric's samples for one model whose name ends with ``suffix``."""
    family = fams.get(metric._name)
    return [
        (s.labels, s.value)
        for s in (family.samples if family else ())
        if s.name.endswith(suffix) and s.labels.get("model") == model
    ]


def _by(
    fams: dict[str, Metric], metric: MetricWrapperBase, model: str, label: str, suffix: str = "_total"
) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, value in _samples(fams, metric, model, suffix):
        out[labels[label]] += value
    return out


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": round(seconds * 1e9)}


def model_statistics(
    metrics: Metrics, fams: dict[str, Metric], card: ModelCard, name: str | None = None
) -> dict[str, Any]:
    """One ``$model_stat`` of the statistics extension for a loaded model version, reported
    under ``name`` (a view's name) or the model's own; ``fams`` is
    :func:`service.metrics.collected` of ``metrics.registry``, read once per request."""
    key = card.key
    requests = _by(fams, metrics.infer_requests, key, "outcome")
    request_s = _by(fams, metrics.infer_request_seconds, key, "outcome")
    phase_n = _by(fams, metrics.phase_requests, key, "phase")
    phase_s = _by(fams, metrics.phase_seconds, key, "phase")
    queue_n = sum(v for _, v in _samples(fams, metrics.queue_wait, key, "_count"))
    queue_s = sum(v for _, v in _samples(fams, metrics.queue_wait, key, "_sum"))
    executions = {int(size): n for size, n in _by(fams, metrics.executions, key, "batch_size").items()}
    exec_s: dict[tuple[int, str], float] = {
        (int(labels["batch_size"]), labels["phase"]): v
        for labels, v in _samples(fams, metrics.execution_seconds, key, "_total")
    }
    last = sum(v for _, v in _samples(fams, metrics.last_inference, key, ""))
    zero = _duration(0, 0.0)
    return {
        "name": name or card.name,
        "version": card.version,
        "last_inference": round(last * 1000),
        "inference_count": int(sum(size * n for size, n in executions.items())),
        "execution_count": int(sum(executions.values())),
        "inference_stats": {
            "success": _duration(requests["success"], request_s["success"]),
            "fail": _duration(requests["fail"], request_s["fail"]),
            "queue": _duration(queue_n, queue_s),
            **{p: _duration(phase_n[p], phase_s[p]) for p in PHASES},
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "batch_stats": [
            {"batch_size": size, **{p: _duration(n, exec_s.get((size, p), 0.0)) for p in PHASES}}
            for size, n in sorted(executions.items())
        ],
    }
