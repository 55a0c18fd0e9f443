"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from service.api.http.responses import FastJSON
from service.metrics import exposition


def build_router() -> APIRouter:
    r = APIRouter(tags=["health"])

    @r.get("/v2/health/live", summary="Liveness")
    async def live() -> FastJSON:
        return FastJSON({"live": True})

    @r.get("/v2/health/ready", summary="Readiness: models loaded, store reachable, not draining")
    async def ready(request: Request) -> FastJSON:
        ok, reason = await request.app.state.dataplane.ready()
        return FastJSON({"ready": ok, "reason": reason}, status_code=200 if ok else 503)

    @r.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        dp = request.app.state.dataplane
        m = request.app.state.metrics
        with contextlib.suppress(Exception):  # an unreachable store must not break scraping
            m.sessions_live.set(await dp.sessions.count())
        return Response(exposition(m.registry), media_type=CONTENT_TYPE_LATEST)

    return r
