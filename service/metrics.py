"""Every Prometheus metric of the service, on a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
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
        self.queue_depth = Gauge("lstm_queue_depth", "Requests waiting for a batch", ["model"], registry=r)
        self.sessions_live = Gauge("lstm_sessions_live", "Live sessions in this process's store view", registry=r)
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
        self.state_bytes = Gauge("lstm_session_state_bytes", "Bytes of (h, C) state per session", ["model"], registry=r)
        self.model_info = Gauge(
            "lstm_model_info",
            "Loaded model versions and the execution provider in use",
            ["model", "version", "provider"],
            registry=r,
        )
        self.ready = Gauge("lstm_ready", "1 when the service is ready to take traffic", registry=r)
