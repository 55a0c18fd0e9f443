"""The HTTP front: uvicorn's httptools protocol, answering the hot routes below ASGI.

uvicorn parses every request, keeps connections alive, queues pipelined requests and
answers them in order, pauses reading a body that arrives faster than it is consumed,
closes idle connections, and drains them on shutdown. Where it would start the ASGI app
for a request, :class:`HotProtocol` first looks the request up in the hot routes' table
(:class:`service.api.hot.HotTable`): a hot request is served by :meth:`HotFront.serve` --
key, body limit, the route's endpoint, the reply written as bytes, the request logged
and counted -- with no ASGI scope, middleware or framework between the parsed request and
the data plane. Every other request goes to the FastAPI app unchanged.

The guarantees of the ASGI front hold here in the same words: 401 for a missing key, 413
for a body over the limit (declared, or while reading a chunked body), every error as
:func:`service.api.errors.error_reply` renders it, the request id, ``Connection: close``
while draining, the access log and the request metrics (:class:`RequestLog`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from service.api.auth import NO_KEY, KeyRing, bearer
from service.api.errors import INTERNAL, error_reply, message_reply
from service.api.hot import HotReply, HotRequest, HotRoute, HotTable
from service.api.middleware import Lifecycle, RequestLog, declared_over, read_over
from service.core.dataplane import DataPlane
from service.errors import ServiceError

log = logging.getLogger("service.http")
CLIENT_GONE = 499  # logged and counted for a request whose client left before it was whole


class HotFront:
    """What the protocol needs to serve a hot request: the routes, the data plane, the keys,
    the body limit, the lifecycle and the request log -- the same objects the app uses."""

    def __init__(
        self,
        table: HotTable,
        dp: DataPlane,
        ring: KeyRing | None,
        limit: int,
        lifecycle: Lifecycle,
        requests: RequestLog,
    ) -> None:
        self.table = table
        self.dp = dp
        self.ring = ring
        self.limit = limit
        self.lifecycle = lifecycle
        self.requests = requests
        self._no_key = message_reply(401, NO_KEY, (b"www-authenticate", b"Bearer"))

    async def serve(self, cycle: RequestResponseCycle, route: HotRoute, params: dict[str, str]) -> None:
        scope = cycle.scope
        headers: list[tuple[bytes, bytes]] = scope["headers"]  # type: ignore[assignment]
        rid = self.requests.request_id(headers)
        t0 = time.perf_counter()
        self.lifecycle.started()
        status = CLIENT_GONE
        try:
            reply = await self._reply(cycle, route, params, headers)
            if reply is not None:
                status = reply.status
                await self._write(cycle, reply, rid)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            status = 500
            await self._write(cycle, message_reply(500, INTERNAL), rid)
        finally:
            cycle.on_response = lambda: None  # as uvicorn's cycle does once its app returns
            self.lifecycle.finished()
            self.requests.record(scope["method"], scope["path"], route.path, status, time.perf_counter() - t0, rid)

    async def _reply(
        self, cycle: RequestResponseCycle, route: HotRoute, params: dict[str, str], headers: list[tuple[bytes, bytes]]
    ) -> HotReply | None:
        """The reply to a hot request, or None when its client left before the body was whole."""
        owner = None
        if self.ring is not None:
            owner = self.ring.owner(bearer(headers))
            if owner is None:
                return self._no_key
        declared = next((v for k, v in headers if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.limit:
            return message_reply(413, declared_over(int(declared), self.limit))
        body = b""
        while True:
            msg: Any = await cycle.receive()  # answers Expect: 100-continue, resumes a paused read
            if msg["type"] == "http.disconnect":
                return None
            body += msg["body"]
            if len(body) > self.limit:
                return message_reply(413, read_over(self.limit))
            if not msg["more_body"]:
                break
        request = HotRequest(self.dp, params, cycle.scope["query_string"], headers, body, owner)
        try:
            return await route.serve(request)
        except ServiceError as e:
            return error_reply(e)

    async def _write(self, cycle: RequestResponseCycle, reply: HotReply, rid: str) -> None:
        """Write the reply in one piece and complete the cycle the way uvicorn's would."""
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()  # a client that reads slowly holds only its own request
        if cycle.disconnected:
            return
        keep_alive = cycle.keep_alive and not self.lifecycle.draining
        parts = [STATUS_LINE[reply.status]]
        for name, value in (*cycle.default_headers, (b"content-length", b"%d" % len(reply.body)), *reply.headers):
            parts += (name, b": ", value, b"\r\n")
        parts += (b"x-request-id: ", rid.encode("latin-1"), b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", reply.body)
        cycle.transport.write(b"".join(parts))
        cycle.response_started = cycle.response_complete = True
        cycle.message_event.set()
        if not keep_alive:
            cycle.keep_alive = False
            cycle.transport.close()
        cycle.on_response()


class HotProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the hot routes served by :attr:`front`."""

    front: HotFront

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if app is self.app:  # not the 503 uvicorn answers past its concurrency limit
            found = self.front.table.match(cycle.scope["method"], cycle.scope["path"])
            if found is not None:
                task = self.loop.create_task(self.front.serve(cycle, *found))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
                return
        super()._start_asgi_task(cycle, app)


def protocol_for(front: HotFront) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn (``uvicorn.Config(http=...)``) for ``front``."""
    return type("HotProtocol", (HotProtocol,), {"front": front})
