"""The model registry: every served model version, loaded, checked and warmed up, with its
worker (batcher and runtime); lookups by name and version, or by a session id; and the
model repository extension: the index, loading and unloading versions while serving.

A version is *served* from the moment it is installed (checked and warmed up, off the event
loop) until it is unloaded. While an unload is under way it is *closing*: the sessions that
live on it keep stepping, but it takes no new work (new sessions, stateless requests, new
sequences go to the newest version that is not closing). Once unloaded, its work in flight
finishes, its batcher stops, and a request that names it gets a 404 saying it was unloaded.

Load and unload requests are serialised by one lock: two loads of the same version never
race, and the poller never works on a version an operator is changing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from pydantic import ValidationError

from service.config import BatchingOverrides, Settings
from service.core.model_worker import GrpcLoad, ModelWorker
from service.errors import ModelControlError, ModelControlOff, ModelInUse, ModelLoadError, ModelNotFound, duration
from service.metrics import Metrics
from service.runtime.onnx_model import OnnxModel
from service.runtime.repository import ModelCard, listing, read_card, scan, signature
from service.sessions.record import parse_session_id
from service.sessions.store import SessionStore

log = logging.getLogger("service.registry")

READY, UNLOADING, UNAVAILABLE = "READY", "UNLOADING", "UNAVAILABLE"
Key = tuple[str, str]  # (model name, version)


def _newest_first(versions: dict[str, ModelWorker]) -> list[str]:
    return sorted(versions, key=int, reverse=True)


class ModelRegistry:
    def __init__(self, settings: Settings, store: SessionStore, metrics: Metrics, grpc_load: GrpcLoad) -> None:
        self.settings = settings
        self.grpc_load = grpc_load  # read by every version's placement rule
        self.store = store
        self.metrics = metrics
        self.workers: dict[str, dict[str, ModelWorker]] = {}  # served versions
        self._closing: set[Key] = set()
        self._unavailable: dict[Key, str] = {}  # versions not served (unloaded, refused), and why
        self._notes: dict[Key, str] = {}  # served versions' reasons in the index (poll mode)
        self._failed: dict[Key, tuple] = {}  # files of versions whose load failed (poll mode)
        self._lock: asyncio.Lock | None = None
        self._poller: asyncio.Task | None = None
        self._started = False

    # -- start-up and shutdown -------------------------------------------------------------
    def load(self, root: Path) -> list[ModelCard]:
        """Load, check and warm up every model version under ``root``; raises ModelLoadError.
        Called once before serving, whatever the model control mode."""
        cards = scan(root)
        for card in cards:
            self._install(card, *self._build(card))
        return cards

    async def start(self) -> None:
        """Start every batcher, and the repository poller in ``poll`` mode. From the running loop."""
        self._lock = asyncio.Lock()
        for w in self.all_workers():
            w.batcher.start()
        self._started = True
        if self.settings.model_control_mode == "poll":
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for w in self.all_workers():
            await w.batcher.stop()
            w.shutdown()

    def _build(self, card: ModelCard) -> tuple[OnnxModel, Settings]:
        """Check and warm up a version (blocking: run it off the event loop once serving)."""
        settings = self.settings_for(card)
        model = OnnxModel(card, settings)
        model.warm_up(settings.max_batch_size)
        return model, settings

    def _install(self, card: ModelCard, model: OnnxModel, settings: Settings) -> ModelWorker:
        w = ModelWorker(model, self.store, settings, self.metrics, self.grpc_load)
        declared = [c.session_ttl_s for c in [card, *(v.card for v in self.all_workers())] if c.session_ttl_s]
        if self.settings.session_ttl_s is None and declared and max(declared) != self.store.ttl_s:
            # no TTL set: sessions live as long as the served cards say (the longest of them)
            self.store.ttl_s = max(declared)
            log.info("sessions expire after %s idle, as the served cards say", duration(self.store.ttl_s))
        if self._started:
            w.batcher.start()
        self.workers.setdefault(card.name, {})[card.version] = w
        self._unavailable.pop((card.name, card.version), None)
        self._failed.pop((card.name, card.version), None)
        self.metrics.model_info.labels(card.name, card.version, model.provider).set(1)
        self.metrics.state_bytes.labels(card.key).set(card.state_bytes)
        loaded = f"under {w.http_inline_s * 1e6:.0f} us" if w.http_inline_s else "none"
        log.info(
            "loaded model %s (%s) on %s: a call costs %.0f us + %.0f us per time step + %.0f us per row-step, "
            "a worker thread adds %.0f us; batches estimated under %.0f us run on the event loop when it had "
            "been quiet, and loaded ones %s while no gRPC request is in progress",
            card.key,
            card.onnx_path,
            model.provider,
            model.call_s * 1e6,
            model.step_s * 1e6,
            model.row_step_s * 1e6,
            model.hop_s * 1e6,
            w.inline_s * 1e6,
            loaded,
        )
        return w

    def settings_for(self, card: ModelCard) -> Settings:
        """The settings a model version runs with: the global ones, with the batching
        settings its card overrides (``"batching"`` in ``model.json``)."""
        try:
            overrides = BatchingOverrides.model_validate(card.raw.get("batching") or {})
        except ValidationError as e:
            raise ModelLoadError(f"{card.path / 'model.json'}: invalid 'batching': {e}") from None
        return overrides.apply(self.settings)

    # -- lookups ---------------------------------------------------------------------------
    def all_workers(self) -> list[ModelWorker]:
        return [w for versions in self.workers.values() for w in versions.values()]

    def models(self) -> dict[str, list[str]]:
        """Served model names and their versions, oldest first."""
        return {name: sorted(versions, key=int) for name, versions in sorted(self.workers.items())}

    def worker(self, name: str, version: str | None = None) -> ModelWorker:
        """A version's worker for new work (the newest that is not being unloaded when
        ``version`` is None), or ModelNotFound."""
        versions = self.workers.get(name)
        if version is not None and (name, version) in self._unavailable and version not in (versions or {}):
            raise ModelNotFound(
                f"version {version!r} of model {name!r} is not served: {self._unavailable[name, version]}"
            )
        if not versions:
            raise ModelNotFound(f"model {name!r} is not served; served models: {sorted(self.workers)}")
        if version is None and len(versions) == 1 and not self._closing:  # the usual case, on every request
            return next(iter(versions.values()))
        if version is None:
            ready = [v for v in _newest_first(versions) if (name, v) not in self._closing]
            if not ready:
                raise ModelNotFound(f"model {name!r} is being unloaded")
            version = ready[0]
        w = versions.get(version)
        if w is None:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; versions: {sorted(versions, key=int)}")
        if (name, version) in self._closing:
            raise ModelNotFound(f"version {version!r} of model {name!r} is being unloaded; it takes no new work")
        return w

    def served_newest_first(self, name: str) -> list[ModelWorker]:
        """Every served version of a model, closing ones included (their sessions still step)."""
        versions = self.workers.get(name) or {}
        if len(versions) == 1:
            return list(versions.values())
        return [versions[v] for v in _newest_first(versions)]

    def session_worker(self, session_id: str) -> ModelWorker | None:
        """The worker of the model version a session id names; None when none is served."""
        parsed = parse_session_id(session_id)
        versions = self.workers.get(parsed[0]) if parsed else None
        return versions.get(parsed[1]) if versions and parsed else None

    def unavailable(self, name: str, version: str) -> str | None:
        """Why a version that was served (or tried) is not served now; None if it is, or never was."""
        return self._unavailable.get((name, version))

    # -- the model repository extension -------------------------------------------------------
    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every model version in the repository or known to the server, with its state
        (``READY``, ``UNLOADING``, ``UNAVAILABLE``) and why, by name then version."""
        entries: dict[Key, tuple[str, str]] = {}
        for key in listing(self.settings.model_repository):
            entries[key] = (UNAVAILABLE, "not loaded")
        for key, reason in self._unavailable.items():
            entries[key] = (UNAVAILABLE, reason)
        for name, versions in self.workers.items():
            for v in versions:
                key = (name, v)
                entries[key] = (UNLOADING, "unloading") if key in self._closing else (READY, self._notes.get(key, ""))
        return [
            {"name": n, "version": v, "state": state, "reason": reason}
            for (n, v), (state, reason) in sorted(entries.items(), key=lambda e: (e[0][0], int(e[0][1])))
            if not ready_only or state == READY
        ]

    def _controlled(self, action: str) -> asyncio.Lock:
        mode = self.settings.model_control_mode
        if mode != "explicit":
            raise ModelControlOff(
                f"cannot {action} models: the server runs with model control mode {mode!r} "
                "(LSTM_MODEL_CONTROL_MODE=explicit allows load and unload requests)"
            )
        assert self._lock is not None, "start() the registry first"
        return self._lock

    async def load_model(self, name: str, version: str | None = None) -> list[str]:
        """Load the versions of ``name`` in the repository that are not served (or only
        ``version``), each checked against the model contract and warmed up before it takes
        traffic. Returns the versions loaded. A version that fails is refused with
        ModelControlError (400) naming why; the versions already served keep serving."""
        async with self._controlled("load"):
            found = {v: path for (n, v), path in listing(self.settings.model_repository).items() if n == name}
            if version is not None:
                found = {v: p for v, p in found.items() if v == version}
            if not found:
                what = f"version {version!r} of model {name!r}" if version else f"model {name!r}"
                raise ModelNotFound(f"{what} is not in the model repository {self.settings.model_repository}")
            loaded, refused = [], []
            for v in sorted(found, key=int):
                if v in self.workers.get(name, {}):
                    continue
                try:
                    await self._load_one(found[v])
                    loaded.append(v)
                except ModelLoadError as e:
                    refused.append(str(e))
            if refused:
                serving = self.models().get(name, [])
                raise ModelControlError(
                    f"model {name!r}: {len(refused)} version(s) refused, not loaded: {'; '.join(refused)}"
                    + (f" (loaded now: {loaded})" if loaded else "")
                    + f"; serving versions: {serving}"
                )
            return loaded

    async def _load_one(self, path: Path) -> ModelWorker:
        key = (path.parent.name, path.name)
        try:
            card = await asyncio.to_thread(read_card, path)
            model, settings = await asyncio.to_thread(self._build, card)
        except ModelLoadError as e:
            self._unavailable[key] = f"load failed: {e}"
            log.error("refused to load %s/%s: %s", *key, e)
            raise
        return self._install(card, model, settings)

    async def unload_model(self, name: str, version: str | None = None, force: bool = False) -> dict[str, int]:
        """Unload every served version of ``name`` (or only ``version``): each stops taking new
        work, finishes its work in flight, and stops. Refused with ModelInUse (409) while
        sessions live on a version, unless ``force``: then those sessions are removed and a
        step on one gets a 404 saying the version was unloaded. Returns the sessions removed
        per version."""
        async with self._controlled("unload"):
            return await self._unload(name, version, force)

    async def _unload(self, name: str, version: str | None, force: bool) -> dict[str, int]:
        versions = self.workers.get(name) or {}
        if version is not None and version not in versions:
            self.worker(name, version)  # ModelNotFound with the reason
        targets = [version] if version is not None else sorted(versions, key=int)
        if not targets:
            self.worker(name)  # ModelNotFound
        await self._refuse_if_in_use(name, targets, force)
        # no new work from here on; then count again: a session may have been made meanwhile
        self._closing.update((name, v) for v in targets)
        try:
            await self._refuse_if_in_use(name, targets, force)
        except BaseException:
            self._closing.difference_update((name, v) for v in targets)
            raise
        ended: dict[str, int] = {}
        for v in targets:
            w = versions.pop(v)
            if not versions:
                self.workers.pop(name, None)
            w.retired = True
            await w.batcher.drain(self.settings.request_timeout_s)  # work in flight finishes
            await w.batcher.stop()
            await asyncio.to_thread(w.shutdown)
            ended[v] = await self.store.delete_version(name, v) if force else 0
            self._closing.discard((name, v))
            self._notes.pop((name, v), None)
            self._unavailable[name, v] = "unloaded" + (f" (forced; {ended[v]} session(s) ended)" if ended[v] else "")
            with contextlib.suppress(KeyError):
                self.metrics.model_info.remove(name, v, w.model.provider)
            with contextlib.suppress(KeyError):
                self.metrics.state_bytes.remove(w.card.key)
            self.metrics.queue_depth.labels(w.card.key).set(0)
            log.info("unloaded model %s%s", w.card.key, f", ending {ended[v]} session(s)" if ended[v] else "")
        return ended

    async def _refuse_if_in_use(self, name: str, targets: list[str], force: bool) -> None:
        if force:
            return
        live = {v: n for v in targets if (n := await self.store.count_version(name, v))}
        if live:
            which = ", ".join(f"{name}/{v} has {n} live session(s)" for v, n in live.items())
            raise ModelInUse(
                f"cannot unload: {which}. Wait for them to end (deleted, or expired after "
                f"{duration(self.store.ttl_s)} idle), or force it with the parameter unload_dependents=true "
                "(their sessions are then removed)"
            )

    # -- poll mode ---------------------------------------------------------------------------
    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.repository_poll_interval_s)
            try:
                await self.sync()
            except Exception:
                log.exception("polling the model repository failed")

    async def sync(self) -> None:
        """Make the served versions follow the repository directory: load new versions (a
        version that failed is tried again once its files change), unload removed ones
        unless sessions still live on them (then they stay, and are tried again each poll)."""
        assert self._lock is not None
        async with self._lock:
            on_disk = listing(self.settings.model_repository)
            for key, path in sorted(on_disk.items(), key=lambda e: (e[0][0], int(e[0][1]))):
                if key[1] in self.workers.get(key[0], {}):
                    continue
                sig = signature(path)
                if self._failed.get(key) == sig:
                    continue
                try:
                    await self._load_one(path)
                except ModelLoadError:
                    self._failed[key] = sig
            for name, versions in list(self.workers.items()):
                for v in list(versions):
                    if (name, v) in on_disk:
                        continue
                    try:
                        await self._unload(name, v, force=False)
                    except ModelInUse:
                        n = await self.store.count_version(name, v)
                        self._notes[name, v] = f"removed from the repository; unloads when its {n} session(s) end"
