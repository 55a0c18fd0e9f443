"""Settings: one class, every field documented, read from ``LSTM_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SESSION_TTL_S = 3600.0  # the idle TTL when neither the setting nor any served card gives one
PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LSTM_", extra="ignore", use_attribute_docstrings=True)

    model_repository: Path = Path("models")
    """Root of the model repository: ``<name>/<version>/model.onnx`` + ``model.json``."""

    model_control_mode: Literal["none", "explicit", "poll"] = "none"
    """How the set of served model versions may change after start-up, as Triton's
    ``--model-control-mode``. Every mode loads the whole repository at start. ``none``: it
    never changes (load and unload requests are refused with 409). ``explicit``: only through
    ``POST /v2/repository/models/{m}/load`` and ``/unload``. ``poll``: the server watches the
    repository every ``repository_poll_interval_s``, loads new versions and unloads removed
    ones (a removed version with live sessions stays until they end); load and unload
    requests are refused."""

    repository_poll_interval_s: float = Field(5.0, gt=0)
    """With ``model_control_mode=poll``, how often the repository directory is scanned."""

    providers: Annotated[tuple[str, ...], NoDecode] = ("cpu",)
    """onnxruntime execution providers in order of preference, comma separated: ``cpu`` or
    ``cuda,cpu``. CUDA is used only when onnxruntime has it; CPU is a fallback only when listed."""

    intra_op_threads: int = Field(1, ge=0)
    """onnxruntime intra-op threads per model (0 lets onnxruntime choose)."""

    inter_op_threads: int = Field(1, ge=0)
    """onnxruntime inter-op threads per model (0 lets onnxruntime choose)."""

    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    """onnxruntime graph optimisation level."""

    max_batch_size: int = Field(64, ge=1)
    """Most rows (sequences or session steps) in one onnxruntime call."""

    max_queue_delay_ms: float = Field(2.0, ge=0)
    """Longest a request waits for a batch to fill while the runtime is busy; an idle runtime
    takes work at once."""

    max_queue_size: int = Field(1024, ge=1)
    """Requests that may wait per model version; beyond it requests are refused with 503."""

    inference_workers: int = Field(1, ge=1)
    """Batches that may run at the same time per model version."""

    inline_compute_us: float = Field(100.0, ge=0)
    """On a quiet event loop (at least as long after the last call as that call took), a batch
    whose calls' estimated onnxruntime time (measured at warm-up) adds up to under this, or
    whose rows cost less than the hop to a worker thread and back (also measured at warm-up),
    runs on the loop; the rest runs in the thread pool, so the loop keeps reading requests
    while it computes. Under load ``http_inline_compute_us`` decides while no gRPC request is
    in progress; while one is, a batch whose requests waited for a busy loop runs in the pool
    (on the loop it would keep the next gRPC calls from being read: grpc.aio takes one new call
    per turn, so every batch after it would be as small). 0 sends every batch to the pool
    (``http_inline_compute_us`` too); a value past every batch lets a quiet loop run any batch
    itself (the lowest latency at low load)."""

    http_inline_compute_us: float = Field(2000.0, ge=0)
    """While no gRPC inference request is in progress in the process, a batch runs on the event
    loop, loaded or not, as far as its calls' estimates add up to under this (or under
    ``inline_compute_us``, if larger): uvloop reads every ready connection in one turn, so the
    batch after one that held the loop takes all that arrived meanwhile, and no batch pays the
    hop to a worker thread and back. The bound keeps a long batch (many or long sequences)
    from holding every connection: the rest of it runs in the pool. Off (``inline_compute_us``
    alone decides) at 0, with ``inline_compute_us`` 0, and with more than one inference worker
    (loaded batches then run side by side in the pool)."""

    request_timeout_s: float = Field(10.0, gt=0)
    """Deadline of a request in the queue and the runtime; past it the reply is 504 and the
    session is left untouched."""

    session_store: Literal["memory", "redis"] = "memory"
    """Where session state lives: this process (``memory``) or a shared Redis (``redis``)."""

    state_dir: Path | None = None
    """Memory store only: a directory where the sessions are saved on a graceful shutdown
    (after the last step) and loaded back at start (before the service is ready), so a
    restart, rolling upgrade or config change keeps them. Nothing is saved on a crash (use
    Redis for that). Unset: sessions end with the process."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis (or Redis Cluster node) URL when ``session_store`` is ``redis``."""

    redis_cluster: bool = False
    """Treat ``redis_url`` as a node of a Redis Cluster (slot-aware client)."""

    redis_timeout_s: float = Field(1.0, gt=0)
    """Redis connect and command timeout: while Redis is unreachable, steps fail after this with 503."""

    redis_max_connections: int = Field(0, ge=0)
    """Connections each process opens to Redis at most. A request that finds every one busy
    waits for a free one (within its deadline) rather than failing, so a burst of session
    creates is queued. 0 derives it from the admission limits: ``max_queue_size / 8``, at least 16."""

    redis_cache_sessions: int = Field(10_000, ge=0)
    """Sessions whose last written record each process keeps, so that a batch of their steps
    reads nothing from Redis and only writes (compare-and-set: a copy another replica made
    stale is found, read again and run again). 0 reads every batch's sessions."""

    session_ttl_s: float | None = Field(None, gt=0)
    """Idle time after which a session expires. Unset: as long as the served models' cards
    say their state stays worth keeping (``session_ttl_s`` in ``model.json``; the longest of
    them; the default model's memory spans weeks and its card says 14 days), or one hour
    for cards that say nothing."""

    max_sessions: int = Field(100_000, ge=1)
    """Most live sessions; creating more is refused with 429 (live sessions are never evicted).
    The memory store maps a state row for each in every served version's array, which takes
    memory only once a session has written it."""

    sweep_interval_s: float = Field(5.0, gt=0)
    """How often the memory store removes expired sessions."""

    max_steps_per_request: int = Field(4096, ge=1)
    """Most time steps in one request (per sequence)."""

    max_sequences_per_request: int = Field(256, ge=1)
    """Most sequences in one stateless predict request."""

    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger bodies get 413."""

    max_header_bytes: int = Field(32 * 1024, ge=1024)
    """Largest request head on the HTTP port (request line and headers together); a larger one
    gets 431 and the connection is closed, before the rest of it is read."""

    max_headers: int = Field(100, ge=8)
    """Most header fields in one HTTP request; more get 431 and the connection is closed."""

    max_sequence_id_chars: int = Field(256, ge=1)
    """Longest string ``sequence_id`` of a v2 or gRPC sequence; a longer one gets 400 (numeric
    ids are uint64)."""

    api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    """API keys, comma separated. When any key is set (here or in ``api_key_file``), requests
    need ``Authorization: Bearer <key>`` and sessions belong to the key that created them.
    Unset: the API is open (a warning is logged at start-up)."""

    api_key_file: Path | None = None
    """A file of API keys, one per line (``#`` starts a comment)."""

    auth_health: bool = False
    """Require a key for the health and metrics routes too."""

    max_sessions_per_key: int = Field(10_000, ge=1)
    """Most live sessions one API key may hold (with auth on); more is refused with 429."""

    gc_gen0_threshold: int = Field(20_000, ge=0)
    """Python's generation-0 GC threshold. After start-up the loaded objects are frozen out of
    the collector and collections run less often: full collections were the main cause of
    p99 latency spikes (40-50 ms) under load. 0 keeps Python's defaults."""

    log_format: Literal["text", "json"] = "text"
    """Log line format."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level."""

    workers: int = Field(1, ge=0)
    """Server processes sharing the port (``SO_REUSEPORT``), each a whole service with its own
    event loop, batcher and onnxruntime session; 0 means one per CPU core. More than one needs
    ``session_store=redis``, where every process sees every session. 1 serves a laptop well;
    see docs/service.md on sizing it."""

    drain_timeout_s: float = Field(20.0, ge=0)
    """On SIGTERM, how long to wait for queued and running work before exiting."""

    drain_quiet_s: float = Field(0.5, ge=0)
    """After SIGTERM, once the work in flight is done, keep answering new requests (503 with
    ``Retry-After`` and ``Connection: close``) until none has arrived for this long, then close
    the port: a client told to go elsewhere is never met by a closed socket instead."""

    grpc_enabled: bool = True
    """Serve the Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``,
    with ``ModelStreamInfer``) and ``grpc.health.v1`` beside HTTP, on ``grpc_port``."""

    grpc_port: int = Field(8001, ge=0, le=65535)
    """gRPC port (``--grpc-port``); 0 picks a free one. It listens on the HTTP host."""

    grpc_stream_window: int = Field(64, ge=1)
    """Requests of one ``ModelStreamInfer`` stream accepted but not yet answered; past it the
    server stops reading the stream until the client reads replies (bounds a slow reader's memory)."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: object) -> tuple[str, ...]:
        if isinstance(v, str):
            return tuple(k.strip() for k in v.split(",") if k.strip())
        return tuple(v)  # type: ignore[arg-type]

    @field_validator("api_key_file")
    @classmethod
    def _key_file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"API key file {v} does not exist")
        return v

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, v: object) -> tuple[str, ...]:
        items = [p.strip().lower() for p in v.split(",")] if isinstance(v, str) else [str(p).lower() for p in v]  # type: ignore[attr-defined]
        items = [p for p in items if p]
        if not items:
            raise ValueError("at least one provider is needed, e.g. 'cpu' or 'cuda,cpu'")
        unknown = [p for p in items if p not in PROVIDER_NAMES]
        if unknown:
            raise ValueError(f"unknown provider(s) {unknown}; known: {sorted(PROVIDER_NAMES)}")
        return tuple(items)


def settings_table() -> str:
    """The README's settings table, made from the fields above."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, f in Settings.model_fields.items():
        d = ",".join(f.default) if isinstance(f.default, tuple) else "unset" if f.default is None else f.default
        desc = " ".join((f.description or "").split()).replace("``", "`")
        rows.append(f"| `LSTM_{name.upper()}` | `{d}` | {desc} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m service.config: print the table for the README
    print(settings_table())


class BatchingOverrides(BaseModel):
    """What a model version's card may set for itself under ``"batching"`` in ``model.json``;
    the global settings are the defaults."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int | None = Field(None, ge=1)
    max_queue_delay_ms: float | None = Field(None, ge=0)
    inline_compute_us: float | None = Field(None, ge=0)
    http_inline_compute_us: float | None = Field(None, ge=0)

    def apply(self, settings: Settings) -> Settings:
        return settings.model_copy(update=self.model_dump(exclude_none=True))
