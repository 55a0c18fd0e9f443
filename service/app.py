"""The composition root: ``create_app(settings)`` builds the service; nothing happens at import."""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import console
from service.api.auth import ApiKeyAuth, key_ring
from service.api.http import docs, errors, health, hot, repository, v1, v2, websocket
from service.api.http.front import HotFront
from service.api.http.middleware import AccessLog, BodyLimit, Lifecycle, RequestLog
from service.config import DEFAULT_SESSION_TTL_S, Settings
from service.core.dataplane import DataPlane
from service.metrics import Metrics
from service.sessions import state_file
from service.sessions.store import SessionStore

log = logging.getLogger("service")


def make_store(settings: Settings, metrics: Metrics) -> SessionStore:
    if settings.session_store == "redis":
        from service.sessions.redis_store import RedisStore

        return RedisStore(
            settings.redis_url,
            settings.session_ttl_s or DEFAULT_SESSION_TTL_S,
            cluster=settings.redis_cluster,
            timeout_s=settings.redis_timeout_s,
            max_connections=settings.redis_max_connections or max(16, settings.max_queue_size // 8),
            wait_s=settings.request_timeout_s,
            cache_size=settings.redis_cache_sessions,
            on_expire=metrics.sessions_expired.inc,
        )
    from service.sessions.memory import MemoryStore

    return MemoryStore(
        settings.session_ttl_s or DEFAULT_SESSION_TTL_S,
        settings.sweep_interval_s,
        on_expire=metrics.sessions_expired.inc,
        rows=settings.max_sessions,
    )


def tune_gc(gen0: int) -> None:
    """Keep the garbage collector off the latency path: what start-up built (models,
    routes, modules) is frozen out of collections, and young collections run less often."""
    if gen0:
        gc.collect()
        gc.freeze()
        _, g1, g2 = gc.get_threshold()
        gc.set_threshold(gen0, max(g1, 50), max(g2, 100))


def _no_otel() -> dict:
    """FastAPI's built-in OpenTelemetry hooks look up the environment on every request;
    metrics here are Prometheus', so they are off (on FastAPI versions that have them)."""
    if "telemetry" in inspect.signature(FastAPI).parameters:
        return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    return {}


def create_app(settings: Settings | None = None, dataplane: DataPlane | None = None) -> FastAPI:
    """Build the app. Models load in the lifespan unless ``dataplane`` already loaded them."""
    settings = settings or Settings()
    metrics = dataplane.metrics if dataplane else Metrics()
    dp = dataplane or DataPlane(settings, make_store(settings, metrics), metrics)
    if settings.state_dir is not None:
        state_file.attach(
            dp.store, settings.state_dir, lambda: {w.card.key: w.card.sha256 for w in dp.all_workers()}, metrics
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not dp.workers:
            dp.load_models()
        await dp.start()
        tune_gc(settings.gc_gen0_threshold)
        metrics.ready.set(1)
        log.info("started: %d model version(s)", len(dp.all_workers()))
        try:
            yield
        finally:
            await dp.drain(settings.drain_timeout_s)
            await dp.stop()
            log.info("stopped")

    app = FastAPI(
        **_no_otel(),
        title="LSTM serving",
        version="0.1.0",
        description="Stateful LSTM inference: server-side sessions keep each stream's (h, C).",
        lifespan=lifespan,
        docs_url=None,  # served from the package by docs.install: no CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.dataplane = dp
    errors.install(app)
    errors.one_status_for_bad_input(app)
    app.include_router(health.build_router())
    docs.install(app)
    v1_routes, v2_routes = v1.build_router(), v2.build_router()
    app.include_router(v1_routes)
    app.include_router(websocket.build_router())
    app.include_router(v2_routes)
    app.include_router(repository.build_router())
    app.include_router(console.build_router())
    table = hot.install(app, v1_routes, v2_routes)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    # the keys are read once, here: the HTTP check, the console and gRPC (python -m service) use this ring
    app.state.key_ring = ring = key_ring(settings.api_keys, settings.api_key_file)
    if ring is not None:
        app.add_middleware(ApiKeyAuth, ring=ring, protect_health=settings.auth_health)
        app.add_middleware(console.BrowserKeyProtocol)  # outside the key check: browsers send the key as a subprotocol
    else:
        log.warning("no API keys configured (LSTM_API_KEYS): the API is open to anyone who can reach it")
    app.state.lifecycle = lifecycle = Lifecycle(dp.gate)
    requests = RequestLog(metrics)
    app.add_middleware(AccessLog, log=requests, lifecycle=lifecycle)  # outermost: logs and counts 401s and 413s too
    # the HTTP front that serves the hot routes below ASGI (python -m service gives it to uvicorn)
    app.state.front = HotFront(
        table, dp, ring, settings.max_body_bytes, lifecycle, requests, settings.max_header_bytes, settings.max_headers
    )
    return app
