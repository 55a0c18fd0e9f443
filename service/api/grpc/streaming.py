"""``ModelStreamInfer``: many requests, of one or several sequences, over one bidirectional call.

* **Order per sequence.** Requests of one sequence (same model, version and ``sequence_id``)
  run one after the other and their responses are written in request order; requests of
  different sequences (and stateless ones) run concurrently, so they batch together.
* **Queued steps run together.** Plain steps of one sequence already waiting behind each
  other run as one longer step, by the rule WebSocket frames follow too
  (:mod:`service.core.coalesce`: exact, since the outputs do not depend on the chunking);
  each still gets its own response. A request the model would refuse, one with an
  ``expected_step``, or one that asks for ``hn``/``cn`` (the state after each request is not
  computed in a run) runs alone.
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
import collections
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Hashable
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from service.api.grpc.codec import _param, decode, encode
from service.api.grpc.protos import service_pb2 as pb
from service.api.grpc.status import to_status
from service.api.protocol.documents import resolve
from service.api.protocol.inference import sequence_id
from service.api.protocol.v2_codec import InferReply, InferRequest
from service.core.coalesce import Part, Run, plain
from service.errors import ServiceError

if TYPE_CHECKING:
    from service.api.grpc.servicer import Servicer

log = logging.getLogger("service.grpc")
RPC = "ModelStreamInfer"
Item = tuple[pb.ModelInferRequest, InferRequest | ServiceError]  # a request and what it decoded to


def order_key(req: pb.ModelInferRequest) -> Hashable | None:
    """Requests with the same key are answered in order; None: no order needed (stateless, or
    an id the one parser refuses: that request gets its own error reply)."""
    p = req.parameters.get("sequence_id")
    if p is None:
        return None
    try:
        sid = sequence_id({"sequence_id": _param(p)}, max_chars=2**31)
    except ServiceError:
        return None
    return None if sid is None else (req.model_name, req.model_version, type(sid).__name__, sid)


class StreamCall:
    def __init__(self, servicer: Servicer, owner: str | None, window: int) -> None:
        self.servicer = servicer
        self.owner = owner
        self.window = asyncio.Semaphore(window)
        self.out: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        self.queues: dict[Hashable, collections.deque[Item]] = {}  # per sequence, read and not yet run
        self.tasks: set[asyncio.Task[None]] = set()
        self.reader: asyncio.Task[None] | None = None
        self.left = False
        self.requests = self.errors = 0
        self.max_steps = servicer.dp.settings.max_steps_per_request

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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _read(self, requests: AsyncIterator[pb.ModelInferRequest]) -> None:
        try:
            async for req in requests:
                await self.window.acquire()
                self.requests += 1
                key = order_key(req)
                item = self._decoded(req)
                if key is None:
                    self._spawn(self._run([item]))
                elif key in self.queues:
                    self.queues[key].append(item)  # its sequence's worker takes it in turn
                else:
                    self.queues[key] = collections.deque([item])
                    self._spawn(self._sequence(key))
        finally:
            # answer everything read, then end the response stream (also when cancelled by leave())
            while self.tasks:
                await asyncio.wait(list(self.tasks))
            self.out.put_nowait(None)

    async def _sequence(self, key: Hashable) -> None:
        """Run one sequence's queued requests in order, queued plain steps of it as one step."""
        q = self.queues[key]
        try:
            while q:
                group = [q.popleft()]
                # a run only where another request waits behind this one: alone, it runs as it is
                run = Run.of(self._part(*group[0]), self.max_steps) if q else None
                while run is not None and q and (part := self._part(*q[0])) is not None and run.add(part):
                    group.append(q.popleft())
                await self._run(group, run)
        finally:
            del self.queues[key]

    @staticmethod
    def _decoded(req: pb.ModelInferRequest) -> Item:
        """The request decoded, or the error its own response carries: a message that cannot be
        decoded is answered with an error, and the stream goes on."""
        try:
            return req, decode(req)
        except ServiceError as e:
            return req, e
        except Exception:
            log.exception("unhandled error decoding a %s request", RPC)
            return req, ServiceError("internal error; see the server log")

    def _part(self, req: pb.ModelInferRequest, d: InferRequest | ServiceError) -> Part | None:
        """A request as a plain step (:mod:`service.core.coalesce`): ``x`` alone, one sequence of
        readings the model's card accepts, ``y`` only (the state after each request is not
        computed in a run), no ``expected_step`` (checked and replayed per request); else None:
        it runs alone."""
        if isinstance(d, ServiceError) or (d.outputs is not None and [n for n, _ in d.outputs] != ["y"]):
            return None
        x = d.inputs.get("x")
        if "expected_step" in d.parameters or len(d.inputs) != 1 or x is None or x.ndim != 3 or x.shape[0] != 1:
            return None
        try:
            card = resolve(self.servicer.dp, req.model_name, req.model_version or None)[0].card
        except ServiceError:
            return None
        if x.dtype != np.float32 or not plain(card, x[0], self.max_steps):
            return None
        p = d.parameters
        return Part(x[0], start=bool(p.get("sequence_start")), end=bool(p.get("sequence_end")))

    async def _run(self, group: list[Item], run: Run | None = None) -> None:
        """Run one request, or a run of one sequence's plain steps, and queue the responses in order."""
        t0 = time.perf_counter()
        s = self.servicer
        try:
            reqs: list[InferRequest] = []
            for _, d in group:
                if isinstance(d, ServiceError):
                    raise d  # only ever alone: a request that did not decode joins no run
                reqs.append(d)
            if len(reqs) == 1:
                run = None  # one request runs as it came
            first = group[0][0]
            reply = await s.counted_infer(
                first.model_name, first.model_version or None, self._merged(reqs, run), self.owner
            )
            out = self._responses(reply, reqs, run)
            code = grpc.StatusCode.OK
        except ServiceError as e:
            code = to_status(e)[0]
            out = [self._error(r, e.message) for r, _ in group]
        except Exception:
            log.exception("unhandled error in %s", RPC)
            code = grpc.StatusCode.INTERNAL
            out = [self._error(r, "internal error; see the server log") for r, _ in group]
        s.count(RPC, code, time.perf_counter() - t0, len(out))
        for response in out:
            self.out.put_nowait(response)

    @staticmethod
    def _merged(reqs: list[InferRequest], run: Run | None) -> InferRequest:
        """What runs: the one request, or a run's requests as one (their readings concatenated)."""
        if run is None:
            return reqs[0]
        params = {
            "sequence_id": reqs[0].parameters["sequence_id"],
            "sequence_start": run.parts[0].start,
            "sequence_end": run.parts[-1].end,
        }
        return InferRequest(None, {"x": run.x[None]}, params, reqs[0].outputs, reqs[0].binary_output)

    @staticmethod
    def _responses(reply: InferReply, reqs: list[InferRequest], run: Run | None) -> list[pb.ModelStreamInferResponse]:
        """Each request's response, its reply written in place; a run's reply split by request."""
        if run is None:
            replies = [reply]
        else:
            name, version = reply.model_name, reply.model_version
            replies = [
                InferReply(name, version, {"y": y[None]}, r.id, {"step": step})
                for (y, step), r in zip(run.split(reply.outputs["y"][0], reply.parameters["step"]), reqs, strict=True)
            ]
        out = []
        for rep, r in zip(replies, reqs, strict=True):
            m = pb.ModelStreamInferResponse()
            encode(rep, r, m.infer_response)
            out.append(m)
        return out

    def _error(self, req: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
        self.errors += 1
        return pb.ModelStreamInferResponse(
            error_message=message,
            infer_response=pb.ModelInferResponse(id=req.id, model_name=req.model_name, model_version=req.model_version),
        )
