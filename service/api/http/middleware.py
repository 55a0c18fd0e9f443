"""ASGI middleware: body size limit, and one log line plus metrics per request."""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import Match

from service.metrics import Metrics, Observer, adder

log = logging.getLogger("service.access")
UNCOUNTED = ("/v2/health/", "/metrics")
UNPRINTABLE = re.compile(rb"[\x00-\x1f\x7f]")


def over_limit(what: str, size: int, limit: int) -> str | None:
    """Why ``size`` bytes of ``what`` are refused (413), or None: the one body limit
    (``LSTM_MAX_BODY_BYTES``) in one wording, for both HTTP fronts and WebSocket messages."""
    return f"{what} of {size} bytes is over the limit of {limit}" if size > limit else None


def declared_over(headers: Any, limit: int) -> str | None:
    """Why a request's declared ``Content-Length`` is refused (413), or None: the first
    check of the body limit, on either front, before any of the body is read."""
    for k, v in headers:
        if k == b"content-length":
            return over_limit("request body", int(v), limit) if v.isdigit() else None
    return None


def read_over(limit: int) -> str:
    """Why a body that grew past the limit while it was read is refused (413)."""
    return f"request body is over the limit of {limit} bytes"


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, by Content-Length or while reading.

    The refusal is raised where the route reads its body, so that it passes through the
    app's one error handler and is logged and counted under the route like any reply."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = declared_over(scope.get("headers", ()), self.limit)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            if too_big:
                raise HTTPException(413, too_big)
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                # an HTTPException passes through FastAPI's body parsing untouched
                raise HTTPException(413, read_over(self.limit))
            return msg

        await self.app(scope, limited, send)


class Lifecycle:
    """What shutdown needs to see of the HTTP side: requests in flight, and whether the
    service is draining (then every reply says ``Connection: close``, so that clients open
    new connections -- to another replica -- instead of reusing one about to close)."""

    def __init__(self, gate: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.in_flight = 0
        self._gate = gate  # the data plane's readiness gate: the one flag that says draining
        self.clock = clock
        self.last_activity = clock()  # when a request last started or finished

    @property
    def draining(self) -> bool:
        return bool(self._gate is not None and self._gate.draining)

    def started(self) -> None:
        self.in_flight += 1
        self.last_activity = self.clock()

    def finished(self) -> None:
        self.in_flight -= 1
        self.last_activity = self.clock()

    def quiet_for(self, seconds: float) -> bool:
        """No request in flight, and none started or finished for ``seconds``."""
        return self.in_flight == 0 and self.clock() - self.last_activity >= seconds


def route_template(scope: dict) -> str:
    """The route template of a request that routing did not label: plain Starlette routes
    (``/docs``, ``/openapi.json``) and replies given before routing (413, 401)."""
    for route in getattr(scope.get("app"), "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


class RequestLog:
    """Request ids, one info line per request, and the request count and latency by route
    template: one instance serves both HTTP fronts (the protocol and :class:`AccessLog`).

    A request without an ``X-Request-ID`` gets one: this process's random prefix and a
    counter (unique across replicas without a system call per request). The metric
    children of each (route, method, status) are looked up once; the log record is built
    only when the info level is on."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._prefix = uuid.uuid4().hex[:16]
        self._ids = itertools.count(1)
        self._children: dict[tuple[str, str, int], tuple[Callable[[float], None], Observer]] = {}

    def request_id(self, headers: Any) -> str:
        """The caller's ``X-Request-ID`` (64 characters at most, printable), or a new one."""
        rid = next((v for k, v in headers if k == b"x-request-id"), None)
        if rid and not UNPRINTABLE.search(rid):
            return rid[:64].decode("latin-1")
        return f"{self._prefix}{next(self._ids):016x}"

    def record(self, method: str, path: str, route: str, status: int, seconds: float, rid: str) -> None:
        if path.startswith(UNCOUNTED):
            return
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            m = self.metrics
            children = self._children[key] = (
                adder(m.requests.labels(route, method, str(status))),
                Observer(m.request_duration.labels(route, method)),
            )
        children[0](1)
        children[1](seconds)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s %d %.2fms",
                method,
                path,
                status,
                seconds * 1000,
                extra={"request_id": rid, "route": route, "status": status, "duration_ms": round(seconds * 1000, 3)},
            )


class AccessLog:
    """The ASGI front's request log (:class:`RequestLog`): request id header on the reply,
    ``Connection: close`` while draining, requests in flight for :class:`Lifecycle`."""

    def __init__(self, app: Any, log: RequestLog, lifecycle: Lifecycle) -> None:
        self.app = app
        self.log = log
        self.lifecycle = lifecycle

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = self.log.request_id(scope.get("headers", ()))
        status = 500
        t0 = time.perf_counter()

        async def send_wrapper(msg: dict) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
                msg["headers"] = [*msg.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
                if self.lifecycle.draining:
                    msg["headers"].append((b"connection", b"close"))
            await send(msg)

        self.lifecycle.started()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.lifecycle.finished()
            route = getattr(scope.get("route"), "path", None) or route_template(scope)
            self.log.record(
                scope.get("method", ""), scope.get("path", ""), route, status, time.perf_counter() - t0, rid
            )


class ContainErrors:
    """The outermost layer of the app: an exception that escapes after its 500 was sent (as
    Starlette re-raises every one, for the server to log) is logged here and goes no further.
    uvicorn closes the connection of an app that raised, so without this one failed request
    would break the client's next, valid one on its keep-alive connection."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        complete = False

        async def watch(message: dict) -> None:
            nonlocal complete
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if not complete:  # no whole reply went out: the server answers (500) or closes
                raise
            log.exception("unhandled error on %s %s (answered 500)", scope.get("method"), scope.get("path"))
