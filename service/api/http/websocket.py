"""WebSocket streaming of session steps: the REST step over one long-lived socket.

Endpoints:
  ``/v1/sessions/{session_id}/stream``  one session per connection; JSON text or binary frames.
  ``/v1/stream``                        any number of sessions per connection; JSON text frames naming session_id.

JSON request (text frame):
  ``{"inputs": [[f1, ..., fF], ...], "expected_step": int (optional), "session_id": str (required on /v1/stream),
  "id": anything (optional, echoed back)}``
JSON reply (text frame):
  ``{"id": ..., "session_id": str, "step": int, "outputs": [[o1, ..., oO], ...], "replayed": bool}``
Binary request (binary frame, per-session endpoint only):
  T x F little-endian float32 values, row-major ``[T, F]``; T = len / (4 F), a length not divisible is refused.
Binary reply (binary frame):
  the session's step after the request as an 8-byte little-endian unsigned integer, then T x O little-endian
  float32 outputs, row-major ``[T, O]``.
Error (always a text frame; ``current_step`` only on 409):
  ``{"id": ..., "session_id": ..., "error": "...", "status": 400|404|409|413|429|500|503|504, "current_step": int}``
  The connection stays open and the session is unchanged, except that when the service is shutting down (503)
  the server closes the socket with code 1012 (service restart) after the error.

Replies come in the order messages were sent. A reader task puts messages into a bounded queue (64); when it
is full the reader waits, the server stops reading the socket and TCP pushes back on the client. A worker task
runs the messages in order; plain binary frames already queued behind each other run as one longer step
(``service.core.coalesce``, the rule gRPC streams follow too: exact, since the outputs do not depend on the
chunking), and each still gets its own reply. On disconnect a step already running completes and queued messages are dropped;
the session lives on until its TTL or a DELETE.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.types import Message
from starlette.websockets import WebSocketDisconnect

from service.api.auth import caller
from service.api.http.middleware import over_limit
from service.api.protocol.decode import json_object, only_fields, optional_step, to_array
from service.api.protocol.json import json_bytes
from service.core.coalesce import Part, Run, plain
from service.core.dataplane import DataPlane
from service.errors import BodyTooLarge, InvalidInput, NotReady, ServiceError, error_body

log = logging.getLogger("service.stream")

QUEUE_SIZE = 64
SERVICE_RESTART = 1012
FIELDS = frozenset({"inputs", "expected_step", "session_id", "id"})
STEP = struct.Struct("<Q")


def _text(body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "websocket.send", "text": json_bytes(body).decode()}


class _Stream:
    """One connection: a reader feeding a bounded queue and a worker answering in order."""

    def __init__(self, ws: WebSocket, session_id: str | None) -> None:
        self.ws = ws
        self.dp: DataPlane = ws.app.state.dataplane
        self.owner = caller(ws.scope)
        self.session_id = session_id  # None on /v1/stream
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue(QUEUE_SIZE)

    async def run(self) -> None:
        await self.ws.accept()
        reader = asyncio.create_task(self._read())
        worker = asyncio.create_task(self._work())
        try:
            await worker  # ends on disconnect (the reader's sentinel), a failed send, or a drain close
        finally:
            reader.cancel()
            worker.cancel()
            for res in await asyncio.gather(reader, worker, return_exceptions=True):
                if isinstance(res, Exception):
                    log.error("WebSocket stream task failed", exc_info=res)

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                await self.queue.put(msg)  # full: stop reading; TCP pushes back
        finally:
            while not self.queue.empty():  # the client is gone: nobody to answer
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def _work(self) -> None:
        held: list[Message | None] = []  # a message taken from the queue that did not join a run
        while True:
            msg = held.pop() if held else await self.queue.get()
            if msg is None:
                return
            # a run only where another frame waits behind this one: alone, it is answered as it is
            run = Run.of(self._part(msg), self.dp.settings.max_steps_per_request) if not self.queue.empty() else None
            # plain binary steps already waiting behind this one run together as one longer
            # step (service.core.coalesce): exact, and much cheaper
            while run is not None and not self.queue.empty():
                nxt = self.queue.get_nowait()
                part = self._part(nxt) if nxt is not None else None
                if part is None or not run.add(part):
                    held.append(nxt)
                    break
            replies, close = await (self._answer_run(run) if run is not None else self._answer(msg))
            try:
                for reply in replies if isinstance(replies, list) else [replies]:
                    await self.ws.send(reply)
                if close:
                    await self.ws.close(SERVICE_RESTART, "the service is shutting down")
                    return
            except (WebSocketDisconnect, RuntimeError):  # the client went away
                return

    def _part(self, msg: Message) -> Part | None:
        """A binary frame's steps when they are a plain step; None leaves it to _answer."""
        data = msg.get("bytes")
        if data is None or self.session_id is None or not data or len(data) > self.dp.settings.max_body_bytes:
            return None
        try:
            card = self.dp.sessions.card(self.session_id)
        except ServiceError:
            return None
        if len(data) % (4 * card.n_features):
            return None
        x = np.frombuffer(data, "<f4").reshape(-1, card.n_features)
        return Part(x) if plain(card, x, self.dp.settings.max_steps_per_request) else None

    async def _answer_run(self, run: Run) -> tuple[list[dict[str, Any]], bool]:
        """One step over a run of plain binary frames; a reply per frame, or the same error for each."""
        assert self.session_id is not None
        try:
            res = await self.dp.sessions.step(self.session_id, run.x, None, self.owner)
        except ServiceError as e:
            err = _text({"id": None, "session_id": self.session_id, **error_body(e), "status": e.status})
            return [err] * len(run.parts), isinstance(e, NotReady)
        return [
            {"type": "websocket.send", "bytes": STEP.pack(step) + np.ascontiguousarray(out, "<f4").tobytes()}
            for out, step in run.split(res.outputs, res.step)
        ], False

    async def _answer(self, msg: Message) -> tuple[dict[str, Any], bool]:
        """The reply frame, and whether to close the socket after it."""
        echo: dict[str, Any] = {"id": None, "session_id": self.session_id}
        try:
            if msg.get("bytes") is not None:
                return await self._binary(msg["bytes"]), False
            return await self._json(msg.get("text") or "", echo), False
        except ServiceError as e:
            return _text({**echo, **error_body(e), "status": e.status}), isinstance(e, NotReady)
        except Exception:
            log.exception("unexpected error on a WebSocket stream")
            return _text({**echo, "error": "internal error", "status": 500}), False

    def _check_size(self, n: int) -> None:
        too_big = over_limit("message", n, self.dp.settings.max_body_bytes)
        if too_big:
            raise BodyTooLarge(too_big)

    async def _binary(self, data: bytes) -> dict[str, Any]:
        if self.session_id is None:
            raise InvalidInput("binary frames are accepted only on /v1/sessions/{session_id}/stream; send JSON here")
        self._check_size(len(data))
        f = self.dp.sessions.card(self.session_id).n_features
        if len(data) % (4 * f):
            raise InvalidInput(
                f"a binary frame must hold whole time steps of {f} float32 values ({4 * f} bytes each); "
                f"got {len(data)} bytes"
            )
        x = np.frombuffer(data, "<f4").reshape(-1, f)
        res = await self.dp.sessions.step(self.session_id, x, None, self.owner)
        out = np.ascontiguousarray(res.outputs, "<f4").tobytes()
        return {"type": "websocket.send", "bytes": STEP.pack(res.step) + out}

    async def _json(self, text: str, echo: dict[str, Any]) -> dict[str, Any]:
        self._check_size(len(text))
        body = json_object(text.encode(), None, "the message")
        echo["id"] = body.get("id")
        sid = body.get("session_id", self.session_id)
        if not isinstance(sid, str):
            raise InvalidInput('"session_id" (a string) is required on /v1/stream')
        echo["session_id"] = sid
        if self.session_id is not None and sid != self.session_id:
            raise InvalidInput(f"this connection streams session {self.session_id!r}; use /v1/stream for several")
        only_fields(body, FIELDS, "the message")
        if "inputs" not in body:
            raise InvalidInput("inputs is required: a list of time steps, each a list of n_features numbers")
        expected = optional_step(body.get("expected_step"))
        res = await self.dp.sessions.step(sid, to_array(body["inputs"], "inputs", 2), expected, self.owner)
        return _text(
            {
                "id": echo["id"],
                "session_id": res.session_id,
                "step": res.step,
                "outputs": res.outputs,
                "replayed": res.replayed,
            }
        )


def build_router() -> APIRouter:
    r = APIRouter(prefix="/v1")

    @r.websocket("/sessions/{session_id}/stream")
    async def session_stream(websocket: WebSocket, session_id: str) -> None:
        """Stream one session's steps: JSON text or compact binary frames."""
        await _Stream(websocket, session_id).run()

    @r.websocket("/stream")
    async def multi_stream(websocket: WebSocket) -> None:
        """Stream several sessions' steps: JSON text frames, each naming its session_id."""
        await _Stream(websocket, None).run()

    return r
