"""The model registry: every served model version, loaded, checked and warmed up, with its
worker (batcher and runtime); lookups by name and version, or by a session id."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from service.config import BatchingOverrides, Settings
from service.core.model_worker import ModelWorker
from service.errors import ModelLoadError, ModelNotFound
from service.metrics import Metrics
from service.runtime.onnx_model import OnnxModel
from service.runtime.repository import ModelCard, scan
from service.sessions.record import parse_session_id
from service.sessions.store import SessionStore

log = logging.getLogger("service.registry")


class ModelRegistry:
    def __init__(self, settings: Settings, store: SessionStore, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.workers: dict[str, dict[str, ModelWorker]] = {}

    def load(self, root: Path) -> list[ModelCard]:
        """Load, check and warm up every model version under ``root``; raises ModelLoadError."""
        cards = scan(root)
        for card in cards:
            settings = self.settings_for(card)
            model = OnnxModel(card, settings)
            model.warm_up(settings.max_batch_size)
            self.workers.setdefault(card.name, {})[card.version] = ModelWorker(
                model, self.store, settings, self.metrics
            )
            self.metrics.model_info.labels(card.name, card.version, model.provider).set(1)
            self.metrics.state_bytes.labels(card.key).set(card.state_bytes)
            log.info("loaded model %s (%s) on %s", card.key, card.onnx_path, model.provider)
        return cards

    def settings_for(self, card: ModelCard) -> Settings:
        """The settings a model version runs with: the global ones, with the batching
        settings its card overrides (``"batching"`` in ``model.json``)."""
        try:
            overrides = BatchingOverrides.model_validate(card.raw.get("batching") or {})
        except ValidationError as e:
            raise ModelLoadError(f"{card.path / 'model.json'}: invalid 'batching': {e}") from None
        return overrides.apply(self.settings)

    def all_workers(self) -> list[ModelWorker]:
        return [w for versions in self.workers.values() for w in versions.values()]

    def models(self) -> dict[str, list[str]]:
        """Served model names and their versions, oldest first."""
        return {name: sorted(versions, key=int) for name, versions in sorted(self.workers.items())}

    def worker(self, name: str, version: str | None = None) -> ModelWorker:
        """A version's worker (the newest when ``version`` is None), or ModelNotFound."""
        versions = self.workers.get(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} is not served; served models: {sorted(self.workers)}")
        if version is None:
            version = max(versions, key=int)
        w = versions.get(version)
        if w is None:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; versions: {sorted(versions, key=int)}")
        return w

    def session_worker(self, session_id: str) -> ModelWorker | None:
        """The worker of the model version a session id names; None when none is served."""
        parsed = parse_session_id(session_id)
        versions = self.workers.get(parsed[0]) if parsed else None
        return versions.get(parsed[1]) if versions and parsed else None
