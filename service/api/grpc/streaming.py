"""``ModelStreamInfer``: many requests, of one or several sequences, over one bidirectional call.

* **Order per sequence.** Requests of one sequence (same model, version and ``sequence_id``)
  run one after the other and their responses are written in request order; requests of
  different sequences (and stateless ones) run concurrently, so they batch together.
* **Errors do not end the stream.** A bad or failed request gets a response with
  ``error_message`` (and ``infer_response.id`` / ``model_name`` of the request), and the
  stream and every sequence's state go on: a failed step changes no state.
* **Flow control.** At most ``window`` requests are read and not yet answered; then the
  server stops reading, HTTP/2 flow control pushes back on the sender, and a client that
  reads its responses slowly holds at most ``window`` responses of memory on the server.
* **Drain.** :meth:`StreamCall.leave` stops reading; what was read is answered, then the
  call ends with UNAVAILABLE and a message to reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Hashable
from typing import TYPE_CHECKING

import grpc

from service.api.grpc.codec import _param
from service.api.grpc.protos import service_pb2 as pb
from service.api.grpc.status import to_status
from service.core.errors import ServiceError

if TYPE_CHECKING:
    from service.api.grpc.servicer import Servicer

log = logging.getLogger("service.grpc")
RPC = "ModelStreamInfer"


def order_key(req: pb.ModelInferRequest) -> Hashable | None:
    """Requests with the same key are answered in order; None: no order needed (stateless)."""
    p = req.parameters.get("sequence_id")
    sid = _param(p) if p is not None else None
    if sid in (None, 0, ""):
        return None
    return (req.model_name, req.model_version, type(sid).__name__, sid)


class StreamCall:
    def __init__(self, servicer: Servicer, owner: str | None, window: int) -> None:
        self.servicer = servicer
        self.owner = owner
        self.window = asyncio.Semaphore(window)
        self.out: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        self.tails: dict[Hashable, asyncio.Task[None]] = {}  # the last request of each sequence
        self.tasks: set[asyncio.Task[None]] = set()
        self.reader: asyncio.Task[None] | None = None
        self.left = False
        self.requests = self.errors = 0

    async def run(self, requests: AsyncIterator[pb.ModelInferRequest]) -> AsyncIterator[pb.ModelStreamInferResponse]:
        self.reader = asyncio.create_task(self._read(requests))
        try:
            while (response := await self.out.get()) is not None:
                yield response
                self.window.release()
        finally:
            if not self.reader.done():  # the client went away: stop reading, drop what is in flight
                self.reader.cancel()
                for t in list(self.tasks):
                    t.cancel()
            try:
                await self.reader
            except (asyncio.CancelledError, Exception) as e:  # the client's side of the call broke
                log.debug("%s: reading the stream ended with %r", RPC, e)

    def leave(self) -> None:
        """Stop reading (drain); requests already read are still answered."""
        self.left = True
        if self.reader is not None:
            self.reader.cancel()

    async def _read(self, requests: AsyncIterator[pb.ModelInferRequest]) -> None:
        try:
            async for req in requests:
                await self.window.acquire()
                self.requests += 1
                key = order_key(req)
                prev = self.tails.get(key) if key is not None else None
                task = asyncio.create_task(self._one(req, prev))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                if key is not None:
                    self.tails[key] = task
                    task.add_done_callback(lambda t, k=key: self._untail(k, t))  # type: ignore[misc]
        finally:
            # answer everything read, then end the response stream (also when cancelled by leave())
            if self.tasks:
                await asyncio.wait(list(self.tasks))
            self.out.put_nowait(None)

    def _untail(self, key: Hashable, task: asyncio.Task[None]) -> None:
        if self.tails.get(key) is task:
            del self.tails[key]

    async def _one(self, req: pb.ModelInferRequest, prev: asyncio.Task[None] | None) -> None:
        if prev is not None:
            await asyncio.wait([prev])  # the sequence's previous request is answered first
        t0 = time.perf_counter()
        s = self.servicer
        try:
            response = pb.ModelStreamInferResponse(infer_response=await s.infer(req, self.owner))
            code = grpc.StatusCode.OK
        except ServiceError as e:
            response, code = self._error(req, e.message), to_status(e)[0]
        except Exception:
            log.exception("unhandled error in %s", RPC)
            response, code = self._error(req, "internal error; see the server log"), grpc.StatusCode.INTERNAL
        s.count(RPC, code, time.perf_counter() - t0)
        self.out.put_nowait(response)

    def _error(self, req: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
        self.errors += 1
        return pb.ModelStreamInferResponse(
            error_message=message,
            infer_response=pb.ModelInferResponse(id=req.id, model_name=req.model_name, model_version=req.model_version),
        )
