"""``inference.GRPCInferenceService``: the unary RPCs and the wiring of ``ModelStreamInfer``.

Every RPC goes through :meth:`Servicer._call`: API key from the ``authorization`` metadata
(``Bearer <key>``, as on REST; ``ServerLive``/``ServerReady`` are open unless
``LSTM_AUTH_HEALTH``), domain errors mapped by :mod:`service.api.grpc.status`, and the
request counted in ``lstm_requests_total{route="/inference.GRPCInferenceService/<rpc>",
method="GRPC", status="<code>"}``. Metadata, configuration and statistics are REST's
documents (:mod:`service.api.http.v2`) as protobuf; the repository RPCs make REST's registry
calls. RPCs not listed here (shared memory, trace, log settings) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format

from service.api.auth import KeyRing
from service.api.grpc.codec import decode, encode
from service.api.grpc.protos import model_config_pb2, service_pb2_grpc
from service.api.grpc.protos import service_pb2 as pb
from service.api.grpc.status import Unauthenticated, to_status
from service.api.grpc.streaming import StreamCall
from service.api.protocol.documents import SERVER, config, metadata, statistics
from service.api.protocol.inference import run_infer
from service.api.protocol.repository import flag_param, only_parameters, version_param
from service.api.protocol.v2_codec import InferReply, InferRequest
from service.core.dataplane import DataPlane
from service.errors import NotReady, ServiceError
from service.metrics import Observer, adder

log = logging.getLogger("service.grpc")
SERVICE = "inference.GRPCInferenceService"
OPEN = ("ServerLive", "ServerReady")  # like /v2/health/*: open unless LSTM_AUTH_HEALTH
R = TypeVar("R")


def _parameters(params: Any) -> dict[str, Any]:
    """A ``map<string, ModelRepositoryParameter>`` as plain values."""
    return {k: getattr(v, v.WhichOneof("parameter_choice") or "string_param") for k, v in params.items()}


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dp: DataPlane, keys: KeyRing | None, protect_health: bool, stream_window: int) -> None:
        self.dp = dp
        self.keys = keys
        self.protect_health = protect_health
        self.stream_window = stream_window
        self.streams: set[StreamCall] = set()  # open ModelStreamInfer calls, told to leave on drain
        self._children: dict[
            tuple[str, grpc.StatusCode], tuple[Callable[[float], None], Observer]
        ] = {}  # labelled metrics, looked up once

    # -- plumbing ------------------------------------------------------------------------
    def owner(self, context: grpc.aio.ServicerContext, rpc: str) -> str | None:
        """The caller's owner id (None with auth off); Unauthenticated without a valid key."""
        if self.keys is None or (rpc in OPEN and not self.protect_health):
            return None
        header = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
        owner = self.keys.owner(header.encode() if isinstance(header, str) else header)
        if owner is None:
            raise Unauthenticated("a valid API key is required: metadata authorization: Bearer <key>")
        return owner

    def count(self, rpc: str, code: grpc.StatusCode, seconds: float, n: int = 1) -> None:
        """``n`` requests of ``rpc`` answered with ``code``, each after ``seconds``."""
        children = self._children.get((rpc, code))
        if children is None:
            route, m = f"/{SERVICE}/{rpc}", self.dp.metrics
            children = (
                adder(m.requests.labels(route, "GRPC", code.name)),
                Observer(m.request_duration.labels(route, "GRPC")),
            )
            self._children[rpc, code] = children
        children[0](n)
        children[1](seconds, n)

    async def _call(self, rpc: str, context: grpc.aio.ServicerContext, fn: Callable[[str | None], Awaitable[R]]) -> R:
        t0 = time.perf_counter()
        try:
            owner = self.owner(context, rpc)
            if self.dp.gate.draining and rpc not in OPEN:  # calls in flight finish; new ones go elsewhere
                raise self._leave_error()
            result = await fn(owner)
        except ServiceError as e:
            code, details, md = to_status(e)
        except Exception:
            log.exception("unhandled error in %s", rpc)
            code, details, md = grpc.StatusCode.INTERNAL, "internal error; see the server log", ()
        else:
            if rpc not in OPEN:
                self.count(rpc, grpc.StatusCode.OK, time.perf_counter() - t0)
            return result
        self.count(rpc, code, time.perf_counter() - t0)
        await context.abort(code, details, trailing_metadata=md)
        raise AssertionError("unreachable: abort raises")

    # -- health and metadata -------------------------------------------------------------
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        async def run(owner: str | None) -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self._call("ServerLive", context, run)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        async def run(owner: str | None) -> pb.ServerReadyResponse:
            ok, _ = await self.dp.ready()
            return pb.ServerReadyResponse(ready=ok)

        return await self._call("ServerReady", context, run)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        async def run(owner: str | None) -> pb.ModelReadyResponse:
            self.dp.worker(request.name, request.version or None)  # NOT_FOUND when unknown
            ok, _ = await self.dp.ready()
            return pb.ModelReadyResponse(ready=ok)

        return await self._call("ModelReady", context, run)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        async def run(owner: str | None) -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(
                name=str(SERVER["name"]), version=str(SERVER["version"]), extensions=list(SERVER["extensions"])
            )

        return await self._call("ServerMetadata", context, run)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        async def run(owner: str | None) -> pb.ModelMetadataResponse:
            doc = metadata(self.dp, request.name, request.version or None)
            return json_format.ParseDict(doc, pb.ModelMetadataResponse())

        return await self._call("ModelMetadata", context, run)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        async def run(owner: str | None) -> pb.ModelConfigResponse:
            doc = config(self.dp, request.name, request.version or None)
            return pb.ModelConfigResponse(config=json_format.ParseDict(doc, model_config_pb2.ModelConfig()))

        return await self._call("ModelConfig", context, run)

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        async def run(owner: str | None) -> pb.ModelStatisticsResponse:
            doc = statistics(self.dp, request.name or None, request.version or None)
            return json_format.ParseDict(doc, pb.ModelStatisticsResponse())

        return await self._call("ModelStatistics", context, run)

    # -- model repository (the same registry calls as REST's /v2/repository) ------------------
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        async def run(owner: str | None) -> pb.RepositoryIndexResponse:
            rows = self.dp.repository_index(request.ready)
            return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows])

        return await self._call("RepositoryIndex", context, run)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        async def run(owner: str | None) -> pb.RepositoryModelLoadResponse:
            params = only_parameters(_parameters(request.parameters), frozenset({"version"}))
            await self.dp.load_model(request.model_name, version_param(params))
            return pb.RepositoryModelLoadResponse()

        return await self._call("RepositoryModelLoad", context, run)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        async def run(owner: str | None) -> pb.RepositoryModelUnloadResponse:
            params = only_parameters(_parameters(request.parameters), frozenset({"version", "unload_dependents"}))
            force = flag_param(params, "unload_dependents")
            await self.dp.unload_model(request.model_name, version_param(params), force=force)
            return pb.RepositoryModelUnloadResponse()

        return await self._call("RepositoryModelUnload", context, run)

    # -- inference -----------------------------------------------------------------------
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        async def run(owner: str | None) -> pb.ModelInferResponse:
            return await self.infer(request, owner)

        return await self._call("ModelInfer", context, run)

    async def infer(self, request: pb.ModelInferRequest, owner: str | None) -> pb.ModelInferResponse:
        """One inference request, decoded, run on the data plane, encoded. Raises domain errors."""
        req = decode(request)
        reply = await self.counted_infer(request.model_name, request.model_version or None, req, owner)
        return encode(reply, req)

    async def counted_infer(self, model: str, version: str | None, req: InferRequest, owner: str | None) -> InferReply:
        """:func:`run_infer`, counted as a gRPC request in progress while it runs (the data
        plane's placement rule reads the count: :class:`~service.core.model_worker.GrpcLoad`)."""
        load = self.dp.grpc_load
        load.requests += 1
        try:
            return await run_infer(self.dp, model, version, req, owner)
        finally:
            load.requests -= 1

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        try:
            owner = self.owner(context, "ModelStreamInfer")
            if self.dp.gate.draining:
                raise self._leave_error()
        except ServiceError as e:
            code, details, md = to_status(e)
            self.count("ModelStreamInfer", code, 0.0)
            await context.abort(code, details, trailing_metadata=md)
        call = StreamCall(self, owner, self.stream_window)
        self.streams.add(call)
        t0 = time.perf_counter()
        try:
            async for response in call.run(request_iterator):
                yield response
        finally:
            self.streams.discard(call)
            log.info(
                "ModelStreamInfer: %d requests, %d errors, %.1f s", call.requests, call.errors, time.perf_counter() - t0
            )
        if call.left:
            code, details, md = to_status(self._leave_error())
            await context.abort(code, details, trailing_metadata=md)

    @staticmethod
    def _leave_error() -> ServiceError:
        return NotReady(
            "the service is shutting down; reconnect (to another replica) and resend the requests not yet answered"
        )

    def start_drain(self) -> None:
        """Called when draining starts: open streams stop reading, answer what they have read, and end
        with UNAVAILABLE; new streams are refused with UNAVAILABLE; unary calls get the data plane's
        UNAVAILABLE."""
        for call in list(self.streams):
            call.leave()
