"""The HTTP front: uvicorn's httptools protocol, answering the hot routes below ASGI.

uvicorn parses every request, keeps connections alive, queues pipelined requests and
answers them in order, pauses reading a body that arrives faster than it is consumed,
closes idle connections, and drains them on shutdown. Where it would start the ASGI app
for a request, :class:`HotProtocol` first looks the request up in the hot routes' table
(:class:`service.api.http.hot.HotTable`): a hot request is served by :meth:`HotFront.serve` --
key, body limit, the route's endpoint, the reply written as bytes, the request logged
and counted -- with no ASGI scope, middleware or framework between the parsed request and
the data plane. Every other request goes to the FastAPI app unchanged.

The guarantees of the ASGI front hold here in the same words: 401 for a missing key, 413
for a body over the limit (declared, or while reading a chunked body), every error as
:func:`service.api.http.errors.error_reply` renders it, the request id, ``Connection: close``
while draining, the access log and the request metrics (:class:`RequestLog`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from service.api.auth import NO_KEY, KeyRing, bearer
from service.api.http.errors import INTERNAL, error_reply, message_reply
from service.api.http.hot import HotReply, HotRequest, HotRoute, HotTable
from service.api.http.middleware import Lifecycle, RequestLog, declared_over, read_over
from service.core.dataplane import DataPlane
from service.errors import ServiceError

log = logging.getLogger("service.http")
MESSAGE_SLACK = 64 * 1024  # beyond a head and a body at their limits: framing and trailers
LINGER_S = 1.0  # a refused connection closes once its client has been silent this long...
LINGER_MAX_S = 30.0  # ...or this long after the refusal, whatever it still sends
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
        head_limit: int = 32 * 1024,
        header_limit: int = 100,
    ) -> None:
        self.head_limit = head_limit  # bytes of a request head (request line and headers)
        self.header_limit = header_limit  # header fields of one request
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
            owner, reply = self._check(headers)
            if reply is None:
                # the usual case: the body came with the headers; otherwise read the rest
                body = await self._read(cycle) if cycle.more_body else bytes(cycle.body)
                if body is not None and len(body) > self.limit:
                    reply = message_reply(413, read_over(self.limit))
                elif body is not None:
                    try:
                        reply = await route.serve(
                            HotRequest(self.dp, params, scope["query_string"], headers, body, owner)
                        )
                    except ServiceError as e:
                        reply = error_reply(e)
            if reply is not None and await self._write(cycle, reply, rid):
                status = reply.status
        except BaseException as e:  # as uvicorn's cycle: cancelled at a forced exit, the client gets a 500 too
            if not isinstance(e, asyncio.CancelledError):
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not cycle.response_started and await self._write(cycle, message_reply(500, INTERNAL), rid):
                status = 500
        finally:
            cycle.on_response = lambda: None  # as uvicorn's cycle does once its app returns
            self.lifecycle.finished()
            self.requests.record(scope["method"], scope["path"], route.path, status, time.perf_counter() - t0, rid)

    def _check(self, headers: list[tuple[bytes, bytes]]) -> tuple[str | None, HotReply | None]:
        """The caller's key owner, or the refusal to send before the body is read (401, 413)."""
        owner = None
        if self.ring is not None:
            owner = self.ring.owner(bearer(headers))
            if owner is None:
                return None, self._no_key
        too_big = declared_over(headers, self.limit)
        return owner, None if too_big is None else message_reply(413, too_big)

    async def _read(self, cycle: RequestResponseCycle) -> bytes | None:
        """The rest of the body, read no further than just past the limit; None when the
        client left first."""
        body = b""
        while True:
            msg: Any = await cycle.receive()  # answers Expect: 100-continue, resumes a paused read
            if msg["type"] == "http.disconnect":
                return None
            body += msg["body"]
            if len(body) > self.limit or not msg["more_body"]:
                return body

    async def _write(self, cycle: RequestResponseCycle, reply: HotReply, rid: str) -> bool:
        """Write the reply in one piece and complete the cycle the way uvicorn's would; False
        when the client had left."""
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()  # a client that reads slowly holds only its own request
        return self.send(cycle, reply, rid)

    def send(self, cycle: RequestResponseCycle, reply: HotReply, rid: str) -> bool:
        """Write the reply now (see :meth:`_write`); False when the client had left."""
        if cycle.disconnected:
            return False
        keep_alive = cycle.keep_alive and not self.lifecycle.draining
        cycle.transport.write(
            reply_bytes(reply, cycle.default_headers, keep_alive, (b"x-request-id", rid.encode("latin-1")))
        )
        cycle.response_started = cycle.response_complete = True
        cycle.message_event.set()
        if not keep_alive:
            cycle.keep_alive = False
            cycle.transport.close()
        cycle.on_response()
        return True


def reply_bytes(
    reply: HotReply, default_headers: list[tuple[bytes, bytes]], keep_alive: bool, *extra: tuple[bytes, bytes]
) -> bytes:
    """A whole HTTP/1.1 reply in one piece: status line, the server's default headers, length,
    the reply's own and ``extra`` headers, ``Connection: close`` unless kept alive, body."""
    parts = [STATUS_LINE[reply.status]]
    length = (b"content-length", b"%d" % len(reply.body))
    close = () if keep_alive else ((b"connection", b"close"),)
    for name, value in (*default_headers, length, *reply.headers, *extra, *close):
        parts += (name, b": ", value, b"\r\n")
    parts += (b"\r\n", reply.body)
    return b"".join(parts)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limits."""


class HotProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the hot routes served by :attr:`front`, and with
    bounds on every request head: more than ``front.header_limit`` header fields, or more
    than ``front.head_limit`` bytes of request line and headers, get 431 and the connection
    is closed as soon as the limit is passed (a head that never ends is not buffered)."""

    front: HotFront
    _in_head = False  # a request head has begun and is not complete
    _head_fed = 0  # bytes fed since the chunk in which the current head began (all head)
    _head_seen = 0  # bytes of the head's request target and complete header fields
    _fields = 0
    _refused = False
    _message_fed = 0  # bytes fed since the last request ended: bounds a chunked body's trailers too

    _linger: asyncio.TimerHandle | None = None
    _linger_until = 0.0

    def data_received(self, data: bytes) -> None:
        if self._refused:  # the rest of a refused request: read and dropped until the close
            if self._linger is not None:
                self._linger_on()
            return
        if self._in_head:
            self._head_fed += len(data)
        self._message_fed += len(data)
        super().data_received(data)
        # the head's size is at least what came after the chunk it began in, and at least
        # what the parser handed over
        f = self.front
        if self._in_head and not self._refused and max(self._head_fed, self._head_seen) > f.head_limit:
            self._refuse_head()
        elif (
            not self._refused
            and self._message_fed > f.head_limit + f.limit + MESSAGE_SLACK
            and self.cycle is not None
            and not self.cycle.response_complete
        ):
            # a request still unanswered that never ends (trailers without end, which the
            # parser buffers): no request this long can be served. (One answered already --
            # a 413 -- has the rest of its body read and dropped, as uvicorn does.)
            self._cut()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_fed, self._head_seen, self._fields = True, 0, 0, 0

    def on_message_complete(self) -> None:
        self._message_fed = 0
        super().on_message_complete()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_seen += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # not a chunked body's trailer (bounded with the message, above)
            self._fields += 1
            self._head_seen += len(name) + len(value) + 4
            if self._fields > self.front.header_limit or self._head_seen > self.front.head_limit:
                self._refused = True
                raise _HeadTooLarge  # the parser stops; uvicorn would answer 400: send_400_response answers 431
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_seen > self.front.head_limit:  # a long request line alone, in one read
            self._refused = True
            raise _HeadTooLarge
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refused:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        self._refused = True
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            # earlier requests on this connection are still being answered: a 431 now would
            # read as their reply. They are answered, and then the connection closes.
            for cycle in (self.cycle, *(c for c, _ in self.pipeline)):
                if cycle is not None:
                    cycle.keep_alive = False
            log.warning("refused a request over the limits from %s after the requests before it", self.client)
            return
        f = self.front
        message = (
            f"the request head is over the limits: at most {f.header_limit} header fields and {f.head_limit} bytes "
            "(LSTM_MAX_HEADERS, LSTM_MAX_HEADER_BYTES)"
        )
        log.warning("refused a request head over the limits from %s", self.client)
        if not self.transport.is_closing():
            self.transport.write(reply_bytes(message_reply(431, message), self.server_state.default_headers, False))
            self._close_lingering()

    def _close_lingering(self) -> None:
        """Close once the client has sent nothing for LINGER_S (LINGER_MAX_S at most), reading
        and dropping what it still sends meanwhile: closing a socket with unread data resets
        it, and the reset can destroy the reply before the client reads it."""
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_until = self.loop.time() + LINGER_MAX_S
        self._linger_on()

    def _linger_on(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
        at = min(self.loop.time() + LINGER_S, self._linger_until)
        self._linger = self.loop.call_at(at, self.transport.close)

    def _cut(self) -> None:
        """Close the connection of an unanswered request that cannot end well (its app sees
        the client gone)."""
        self._refused = True
        log.warning("closed a connection whose request ran past every limit, from %s", self.client)
        self.transport.close()

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
