"""The gRPC server: ``inference.GRPCInferenceService`` and ``grpc.health.v1`` on one port.

Lifecycle, driven by ``python -m service`` (:class:`service.__main__.DrainingServer`):
:meth:`GrpcServer.start` binds before the models' lifespan runs (RPCs answer UNAVAILABLE
"still loading" until then), :meth:`GrpcServer.serving` marks health SERVING once the data
plane is up, the data plane's drain hook (:meth:`GrpcServer.start_drain`) turns health
NOT_SERVING and tells open streams to leave, and :meth:`GrpcServer.stop` refuses new calls
and lets calls in flight finish within a grace period.

Health (``grpc.health.v1.Health``): service ``""`` is liveness (SERVING while the process
serves, NOT_SERVING once draining), service ``inference.GRPCInferenceService`` is readiness,
checked live like ``/v2/health/ready`` (models loaded, session store reachable, not draining).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from service.api.auth import KeyRing
from service.api.grpc.protos import service_pb2_grpc
from service.api.grpc.servicer import SERVICE, Servicer
from service.api.grpc.status import to_status
from service.config import Settings
from service.core.dataplane import DataPlane
from service.errors import ServiceError

log = logging.getLogger("service.grpc")
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class Health(health_aio.HealthServicer):
    """The standard health service; readiness of the inference service is checked on each call."""

    def __init__(self, servicer: Servicer) -> None:
        super().__init__()
        self.servicer = servicer

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        try:
            self.servicer.owner(context, "ServerReady")
        except ServiceError as e:
            code, details, md = to_status(e)
            await context.abort(code, details, trailing_metadata=md)
        if request.service == SERVICE:
            ok, _ = await self.servicer.dp.ready()
            return health_pb2.HealthCheckResponse(status=SERVING if ok else NOT_SERVING)
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        try:
            self.servicer.owner(context, "ServerReady")
        except ServiceError as e:
            code, details, md = to_status(e)
            await context.abort(code, details, trailing_metadata=md)
        await super().Watch(request, context)


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    def __init__(
        self, settings: Settings, dp: DataPlane, host: str, ring: KeyRing | None, share_port: bool = False
    ) -> None:
        """``ring``: the keys the HTTP front checks (None: auth off). ``share_port``: one of several
        worker processes on the port (SO_REUSEPORT, as their HTTP socket)."""
        self.share_port = share_port
        self.servicer = Servicer(dp, ring, settings.auth_health, settings.grpc_stream_window)
        self.health = Health(self.servicer)
        self.address = address(host, settings.grpc_port)
        self.max_message = settings.max_body_bytes
        self.port = 0
        self._server: grpc.aio.Server | None = None
        dp.on_drain.append(self.start_drain)

    async def start(self) -> int:
        """Bind and start serving; the bound port. Raises RuntimeError when the port is taken."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message),
                # a taken port is an error, not a second listener -- except among workers sharing it
                ("grpc.so_reuseport", 1 if self.share_port else 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ]
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for name in ("", SERVICE):
            await self.health.set(name, NOT_SERVING)
        self.port = server.add_insecure_port(self.address)
        await server.start()
        self._server = server
        log.info("gRPC on %s (port %d)", self.address, self.port)
        return self.port

    async def serving(self) -> None:
        """The data plane is up: health says SERVING (Watch streams see it)."""
        for name in ("", SERVICE):
            await self.health.set(name, SERVING)

    def start_drain(self) -> None:
        self.servicer.start_drain()
        asyncio.get_running_loop().create_task(self.health.enter_graceful_shutdown())

    async def stop(self, grace: float) -> None:
        """Refuse new calls (UNAVAILABLE) and give calls in flight ``grace`` seconds to finish."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)
