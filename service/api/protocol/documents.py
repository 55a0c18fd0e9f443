"""The Open Inference Protocol's documents about the server and its models -- server metadata,
model metadata, the model configuration, the statistics extension -- for a model named as a
client names it (``<model>`` or its stateless view ``<model>.stateless``, a version or the
newest). REST (``/v2``, ``/v2/models/{m}[/versions/{v}][/config|/stats]``) and gRPC
(``ServerMetadata``, ``ModelMetadata``, ``ModelConfig``, ``ModelStatistics``) serve these."""

from __future__ import annotations

from typing import Any

from service.api.protocol.model_config import model_config, model_metadata, split_view, view_name
from service.api.protocol.statistics import model_statistics
from service.core.dataplane import DataPlane
from service.core.model_worker import ModelWorker
from service.metrics import collected

SERVER = {
    "name": "lstm-serving",
    "version": "0.1.0",
    "extensions": [
        "binary_tensor_data",
        "sequence",
        "parameters",
        "model_configuration",
        "statistics",
        "model_repository",
        "model_repository(unload_dependents)",
    ],
}


def resolve(dp: DataPlane, model: str, version: str | None) -> tuple[ModelWorker, bool]:
    """The worker behind a model name or its stateless view (``<model>.stateless``)."""
    name, stateless = split_view(model)
    return dp.worker(name, version), stateless


def metadata(dp: DataPlane, model: str, version: str | None) -> dict[str, Any]:
    w, stateless = resolve(dp, model, version)
    return model_metadata(w.card, dp.models()[w.card.name], stateless)


def config(dp: DataPlane, model: str, version: str | None) -> dict[str, Any]:
    w, stateless = resolve(dp, model, version)
    return model_config(w.card, w.settings, w.model.provider, dp.sessions.ttl_s, stateless)


def statistics(dp: DataPlane, model: str | None, version: str | None) -> dict[str, Any]:
    """Triton's statistics extension: every version of every model, of one model, or one version."""
    if model is None:
        workers = [(w, False) for w in dp.all_workers()]
    elif version is None:
        w, stateless = resolve(dp, model, None)
        workers = [(v, stateless) for v in dp.workers[w.card.name].values()]
    else:
        workers = [resolve(dp, model, version)]
    fams = collected(dp.metrics.registry)  # one read of every metric (every worker's files)
    return {
        "model_stats": [
            model_statistics(dp.metrics, fams, w.card, view_name(w.card, stateless)) for w, stateless in workers
        ]
    }
