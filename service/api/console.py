"""The console: a plain page at ``/console`` (static files from ``service/console/``, no CDN)
and the few JSON routes it reads besides the public API.

* ``GET /console``, ``/console/static/...`` -- the page; open even with API keys on (it holds
  no data; it asks for a key and keeps it in memory only).
* ``GET /v1/console/stats`` -- the server's own counters, summarised: live sessions, steps,
  request and inference latency quantiles, batch sizes, queue depth.
* ``GET /v1/console/models/{model}/heldout`` -- the model's held-out readings (``heldout.json``
  in its version directory, written by ``python -m export.heldout``), for the demo.
* ``GET /v1/console/models/{model}/forecast.png`` -- the card's test-period plot.

Browsers cannot set headers on a WebSocket, so ``BrowserKeyProtocol`` lets them send the API
key as a subprotocol (``lstm-serving`` plus ``bearer.<base64url key>``): it moves the key into
an ``Authorization`` header before the auth middleware sees the handshake, and answers with
the ``lstm-serving`` subprotocol.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client.metrics_core import Metric
from starlette.responses import FileResponse, RedirectResponse, Response

from service.api.auth import SUBPROTOCOL as PROTOCOL
from service.api.http.responses import FastJSON
from service.errors import ModelNotFound
from service.metrics import collected

KEY_PREFIX = "bearer."
MEDIA = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
STATIC = (Path(__file__).parent.parent / "console").resolve()  # package data: ships in the wheel


def histogram(fams: dict[str, Metric], name: str, **where: str) -> tuple[list[tuple[float, float]], float, float]:
    """A histogram's cumulative buckets ``[(le, count)]``, count and sum, summed over its
    label sets (those matching ``where``); ``fams``: :func:`service.metrics.collected`."""
    buckets: dict[float, float] = {}
    count = total = 0.0
    family = fams.get(name)
    if family is not None:
        for s in family.samples:
            if any(s.labels.get(k) != v for k, v in where.items()):
                continue
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
            elif s.name.endswith("_count"):
                count += s.value
            elif s.name.endswith("_sum"):
                total += s.value
    return sorted(buckets.items()), count, total


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """``histogram_quantile`` as Prometheus computes it: linear within the bucket."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def summary(fams: dict[str, Metric], name: str, **where: str) -> dict[str, float | None]:
    buckets, count, total = histogram(fams, name, **where)
    return {
        "count": count,
        "mean": total / count if count else None,
        "p50": quantile(buckets, 0.5),
        "p90": quantile(buckets, 0.9),
        "p99": quantile(buckets, 0.99),
    }


def total(fams: dict[str, Metric], name: str) -> float:
    """A counter's or gauge's value summed over its label sets."""
    family = fams.get(name)
    return sum(s.value for s in family.samples if s.name in (name, f"{name}_total")) if family else 0.0


def build_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/console")
    async def page() -> Response:
        return FileResponse(str(STATIC / "index.html"), headers={"cache-control": "no-store"})

    @r.get("/console/")
    async def slash() -> Response:
        return RedirectResponse("/console")

    @r.get("/console/static/{name:path}")
    async def static(name: str) -> Response:
        path = (STATIC / name).resolve()
        if not path.is_relative_to(STATIC) or not path.is_file() or path.suffix not in MEDIA:
            return FastJSON({"error": f"no console file {name!r}"}, status_code=404)
        return FileResponse(str(path), media_type=MEDIA[path.suffix], headers={"cache-control": "no-cache"})

    @r.get("/console/config")
    async def config(request: Request) -> FastJSON:
        """What the page needs before it has a key: whether it needs one."""
        return FastJSON({"auth": request.app.state.key_ring is not None})

    @r.get("/v1/console/stats")
    async def stats(request: Request) -> FastJSON:
        dp = request.app.state.dataplane
        m = request.app.state.metrics
        with contextlib.suppress(Exception):  # an unreachable store must not break the page
            m.sessions_live.set(await dp.sessions.count())
        reg = collected(m.registry)  # every worker's figures, read once
        return FastJSON(
            {
                "time": time.time(),
                "sessions_live": total(reg, "lstm_sessions_live"),
                "sessions_created": total(reg, "lstm_sessions_created"),
                "steps": total(reg, "lstm_steps"),
                "requests": total(reg, "lstm_requests"),
                "queue_depth": total(reg, "lstm_queue_depth"),
                "request_seconds": summary(reg, "lstm_request_duration_seconds"),
                "inference_seconds": summary(reg, "lstm_inference_seconds"),
                "queue_wait_seconds": summary(reg, "lstm_queue_wait_seconds"),
                "batch_size": summary(reg, "lstm_batch_size"),
            }
        )

    def model_file(request: Request, model: str, name: str) -> Response:
        path = request.app.state.dataplane.worker(model).card.path / name
        if not path.is_file():
            raise ModelNotFound(f"model {model!r} has no {name}")
        return FileResponse(str(path))

    @r.get("/v1/console/models/{model}/heldout")
    async def heldout(request: Request, model: str) -> Response:
        return model_file(request, model, "heldout.json")

    @r.get("/v1/console/models/{model}/forecast.png")
    async def forecast(request: Request, model: str) -> Response:
        return model_file(request, model, "forecast.png")

    return r


class BrowserKeyProtocol:
    """ASGI middleware, outside the API-key check (installed only when keys are): a WebSocket
    handshake offering the subprotocols ``lstm-serving`` and ``bearer.<base64url key>`` gets the
    key as its ``Authorization`` header, and the ``lstm-serving`` subprotocol in the reply."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or PROTOCOL not in (offered := scope.get("subprotocols") or []):
            return await self.app(scope, receive, send)
        key = next((p[len(KEY_PREFIX) :] for p in offered if p.startswith(KEY_PREFIX)), None)
        scope = {**scope, "subprotocols": [p for p in offered if not p.startswith(KEY_PREFIX)]}
        if key is not None:
            try:
                token = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
            except (binascii.Error, ValueError):
                token = b""
            scope["headers"] = [
                *[
                    (k, v)
                    for k, v in scope.get("headers", ())
                    if k not in (b"authorization", b"sec-websocket-protocol")
                ],
                (b"authorization", b"Bearer " + token),
            ]

        async def choose(msg: dict) -> None:
            if msg["type"] == "websocket.accept" and not msg.get("subprotocol"):
                msg = {**msg, "subprotocol": PROTOCOL}
            await send(msg)

        await self.app(scope, receive, choose)
