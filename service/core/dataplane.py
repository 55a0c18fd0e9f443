"""The data plane: every transport (REST v1, Open Inference Protocol v2, WebSocket, gRPC) calls this.

Its face: the service's lifecycle (start, readiness, drain, stop), the models
(:class:`ModelRegistry`: lookup, the repository extension), stateless inference, and the
sessions (:class:`SessionService`, ``dp.sessions``). Inputs arrive as typed arrays, already
decoded by the transport's wire format; the model checks are :mod:`service.core.inputs`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from service.config import Settings
from service.core import inputs
from service.core.model_worker import GrpcLoad, ModelWorker
from service.core.registry import ModelRegistry
from service.core.session_service import SessionService
from service.core.streams import Gate
from service.core.work import PredictResult, StatelessWork
from service.metrics import Metrics
from service.runtime.repository import ModelCard
from service.sessions.store import SessionStore


class DataPlane:
    def __init__(self, settings: Settings, store: SessionStore, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.grpc_load = GrpcLoad()  # counted by the gRPC service, read by the placement rule
        self.registry = ModelRegistry(settings, store, metrics, self.grpc_load)
        self.gate = Gate()  # readiness: new work only once started, and not while draining
        self.sessions = SessionService(settings, store, metrics, self.registry, self.gate)
        self.on_drain: list[Callable[[], None]] = []  # transports' hooks, called when draining starts
        self._drained: bool | None = None  # the drain's outcome, once it has run

    # -- lifecycle -----------------------------------------------------------------------
    def load_models(self) -> list[ModelCard]:
        """Load, check and warm up every model version; raises ModelLoadError. Synchronous."""
        return self.registry.load(self.settings.model_repository)

    @property
    def workers(self) -> dict[str, dict[str, ModelWorker]]:
        return self.registry.workers

    async def start(self) -> None:
        await self.store.start()
        await self.registry.start()
        self.gate.started = True

    def start_drain(self) -> None:
        """Stop admitting (the gate is the one flag every transport reads), once."""
        if self.gate.draining:
            return
        self.gate.draining = True
        self.metrics.ready.set(0)
        for hook in self.on_drain:
            hook()

    async def drain(self, timeout: float) -> bool:
        """Refuse new work and wait for queued and running batches; True if all finished. Run
        once: a later call (the lifespan's exit after the server's own drain) returns at once."""
        if self._drained is not None:
            return self._drained
        self.start_drain()
        deadline = time.monotonic() + timeout
        ok = True
        for w in self.all_workers():
            ok &= await w.batcher.drain(max(0.0, deadline - time.monotonic()))
        self._drained = ok
        return ok

    async def seal(self) -> None:
        """Save the sessions of a store that saves on shutdown, now that no step runs."""
        await self.store.seal()

    async def stop(self) -> None:
        await self.registry.stop()
        await self.store.close()

    def all_workers(self) -> list[ModelWorker]:
        return self.registry.all_workers()

    async def ready(self) -> tuple[bool, str]:
        refused = self.gate.reason()
        if refused is not None:
            return False, refused
        if not self.registry.workers:
            return False, "no model is loaded"
        if not await self.store.ping():
            return False, "the session store is unreachable"
        return True, "ready"

    # -- models --------------------------------------------------------------------------
    def worker(self, name: str, version: str | None = None) -> ModelWorker:
        return self.registry.worker(name, version)

    # -- the face transports use --------------------------------------------------------
    def models(self) -> dict[str, list[str]]:
        """Served model names and their versions, oldest first."""
        return self.registry.models()

    # -- the model repository extension (routes and RPCs call these) ----------------------
    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every model version in the repository or served, with its state and why."""
        return self.registry.index(ready_only)

    async def load_model(self, name: str, version: str | None = None) -> list[str]:
        """Load a model's versions that are not served yet (explicit mode); see ModelRegistry."""
        return await self.registry.load_model(name, version)

    async def unload_model(self, name: str, version: str | None = None, force: bool = False) -> dict[str, int]:
        """Unload a model's versions (explicit mode); ``force`` ends their sessions."""
        return await self.registry.unload_model(name, version, force)

    # -- stateless -----------------------------------------------------------------------
    async def predict(
        self,
        name: str,
        version: str | None,
        x: np.ndarray,
        h0: np.ndarray | None = None,
        c0: np.ndarray | None = None,
        field: str = "inputs",
    ) -> tuple[ModelWorker, PredictResult]:
        """Whole sequences ``x [n, T, F]`` from zeros (or from ``h0``/``c0 [L, n, H]``)."""
        self.gate.check()
        w = self.worker(name, version)
        c, s = w.card, self.settings
        inputs.check_sequences(c, x, field, s.max_sequences_per_request, s.max_steps_per_request)
        n = x.shape[0]
        state = inputs.initial_state(c, {"h0": h0, "c0": c0}, n)
        result = await w.batcher.submit(StatelessWork(x, state), rows=n, timeout=self.settings.request_timeout_s)
        return w, result
