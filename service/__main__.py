"""``python -m service``: load the models, then serve HTTP (uvicorn) and gRPC (grpc.aio) in one
process and one event loop; drain both on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

import uvicorn
from pydantic import ValidationError

from service.api.grpc.server import GrpcServer
from service.api.http.front import protocol_for
from service.api.http.middleware import ContainErrors, Lifecycle
from service.app import create_app, make_store
from service.config import Settings
from service.core.dataplane import DataPlane
from service.errors import ModelLoadError
from service.logs import configure
from service.metrics import Metrics
from service.supervisor import HELD_SIGNALS, WORKER_ENV, check, supervise, worker_count

log = logging.getLogger("service")
STRAGGLER_CUT_S = 2  # after the drain, how long uvicorn waits for requests still open before cutting them


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT: turn not-ready, refuse new work with 503, let queued and
    running batches finish (up to the drain timeout), keep answering until requests stop
    arriving, then shut down and exit 0. A second signal exits at once."""

    def __init__(
        self,
        config: uvicorn.Config,
        dataplane: DataPlane,
        lifecycle: Lifecycle,
        drain_timeout: float,
        drain_quiet: float,
        grpc: GrpcServer | None = None,
    ) -> None:
        super().__init__(config)
        self.dataplane = dataplane
        self.lifecycle = lifecycle
        self.drain_timeout = drain_timeout
        self.drain_quiet = drain_quiet
        self.grpc = grpc
        self.failed = False
        self._signalled = False  # a first signal came: a second one exits at once

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # gRPC binds first (its RPCs answer "still loading" until the models are up), on this loop
        if self.grpc is not None:
            try:
                await self.grpc.start()
            except RuntimeError:
                problem = (
                    f"cannot listen for gRPC on {self.grpc.address} (is the port taken?): set LSTM_GRPC_PORT or "
                    f"--grpc-port to another port, or LSTM_GRPC_ENABLED=false"
                )
                log.error("%s", problem)
                print(f"error: {problem}", file=sys.stderr)
                self.failed = self.should_exit = True
                return
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            if not self.lifespan.should_exit:  # the lifespan started: the bind failed (uvicorn logged why)
                c = self.config
                problem = (
                    f"cannot serve HTTP on {c.host}:{c.port} (is the port taken?): set --port (make serve PORT=...)"
                )
                log.error("%s", problem)
                print(f"error: {problem}", file=sys.stderr)
            raise
        log.info("ready: HTTP on http://%s:%d", self.config.host, self.config.port)
        # a worker starts with SIGTERM/SIGINT held (service/supervisor.py); uvicorn's handlers
        # are in place now, so one that came meanwhile is delivered here and drains as usual
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
        if self.grpc is not None and self.started:
            await self.grpc.serving()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc is not None:  # before the lifespan stops the data plane
            await self.grpc.stop(0 if self.force_exit else self.drain_timeout)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._signalled:
            self.force_exit = True
            self.should_exit = True
            return
        self._signalled = True
        log.info("signal %d: draining (up to %.0f s), then exiting", sig, self.drain_timeout)
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain()))

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.drain_timeout
        finished = await self.dataplane.drain(self.drain_timeout)
        # admission has stopped and the batches are done: the state is saved before stragglers
        # are waited on, so the save is not held up by a client that never finishes its body
        if finished:  # otherwise a batch still running may commit: the store saves when it closes
            await self.dataplane.seal()
        # Requests still being read or answered, and stragglers that arrive now: each gets its
        # reply (503 + Connection: close once draining) before the port closes. Closing it while
        # requests still come would meet them with a reset socket instead.
        while not self.lifecycle.quiet_for(self.drain_quiet) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.grpc is not None:  # new calls UNAVAILABLE, calls in flight finish
            await self.grpc.stop(max(0.0, deadline - time.monotonic()))
        if not finished or self.lifecycle.in_flight:
            log.warning("drain timeout: work still in flight after %.0f s", self.drain_timeout)
        self.should_exit = True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the LSTM models of a model repository. Other settings: LSTM_* environment variables.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-repository", type=Path, default=None, help="overrides LSTM_MODEL_REPOSITORY")
    p.add_argument("--grpc-port", type=int, default=None, help="overrides LSTM_GRPC_PORT (default 8001)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides: dict[str, object] = {"model_repository": args.model_repository} if args.model_repository else {}
        if args.grpc_port is not None:
            overrides["grpc_port"] = args.grpc_port
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        print(f"error: invalid settings:\n{e}", file=sys.stderr)
        return 2
    configure(settings.log_format, settings.log_level)
    worker = os.environ.get(WORKER_ENV)
    if worker is None and worker_count(settings) > 1:
        problem = check(settings)
        if problem:
            log.error("cannot start: %s", problem)
            print(f"error: {problem}", file=sys.stderr)
            return 2
        return supervise(argv if argv is not None else sys.argv[1:], settings)
    metrics = Metrics()
    dp = DataPlane(settings, make_store(settings, metrics), metrics)
    try:
        dp.load_models()
    except ModelLoadError as e:
        log.error("cannot start: %s", e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = create_app(settings, dp)
    config = uvicorn.Config(
        ContainErrors(app),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        http=protocol_for(app.state.front),  # the hot routes below ASGI, everything else to the app
        # the drain above gave requests their time; past it uvicorn cuts what is left at once
        timeout_graceful_shutdown=STRAGGLER_CUT_S,
    )
    ring = app.state.key_ring
    grpc = GrpcServer(settings, dp, args.host, ring, share_port=worker is not None) if settings.grpc_enabled else None
    server = DrainingServer(config, dp, app.state.lifecycle, settings.drain_timeout_s, settings.drain_quiet_s, grpc)
    if worker is None:
        server.run()
    else:  # one of several processes on this port: the kernel spreads connections over them
        server.run(sockets=[reuse_port_socket(args.host, args.port)])
    if server.failed:
        return 2
    return 1 if dp.store.save_failed else 0


def reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    sys.exit(main())
