"""Triton's model configuration and the v2 model metadata, as pure functions of the model
card, the settings and the execution provider in use. REST (``/v2/models/{m}/config``) and
gRPC (``ModelConfig``) both serve :func:`model_config`.

Every model is described as Triton describes a stateful model with *implicit state*: the
recurrent state (``h0``/``c0`` in, ``hn``/``cn`` out; ``h0``/``hn`` for a GRU) lives on the server, so the metadata
lists only ``x`` and ``y`` and the config names the state pairs under
``sequence_batching.state``. ``max_batch_size`` is the batcher's row limit, so ``dims``
leave out the batch dimension (``x``: ``[seq, features]``) and the metadata shapes carry it
as a leading ``-1``: a request's ``x`` is ``[batch, seq, features]``.

Each model also has a *stateless view*, ``<model>.stateless`` (``.`` cannot appear in a
model name, so it never clashes): the same model and batcher without ``sequence_batching``,
for benchmarking whole windows from a zero state (perf_analyzer picks sequence mode from the
config alone). The proto's ``scheduling_choice`` is a oneof, so the batching settings appear
as ``dynamic_batching`` in the stateless view and as ``sequence_batching.oldest`` (dynamic
batches across sequences) in the model itself.
"""

from __future__ import annotations

from typing import Any

from service.config import Settings
from service.runtime.repository import ModelCard

STATELESS_SUFFIX = ".stateless"
TRITON_TYPES = {"FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64"}


def split_view(name: str) -> tuple[str, bool]:
    """``"demand.stateless"`` -> ``("demand", True)``; any other name -> ``(name, False)``."""
    if name.endswith(STATELESS_SUFFIX):
        return name.removesuffix(STATELESS_SUFFIX), True
    return name, False


def view_name(card: ModelCard, stateless: bool) -> str:
    return card.name + STATELESS_SUFFIX if stateless else card.name


def _tensors(card: ModelCard) -> tuple[dict[str, Any], dict[str, Any]]:
    """``x`` and ``y`` as the ONNX contract fixes them (checked against the graph at load)."""
    x = {"name": "x", "datatype": "FP32", "shape": [-1, -1, card.n_features]}
    y = {"name": "y", "datatype": "FP32", "shape": [-1, -1, card.n_outputs]}
    return x, y


def model_metadata(card: ModelCard, versions: list[str], stateless: bool = False) -> dict[str, Any]:
    """Open Inference Protocol model metadata: ``x`` in, ``y`` out, batch dimension first."""
    x, y = _tensors(card)
    return {
        "name": view_name(card, stateless),
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": [x],
        "outputs": [y],
    }


def _io(t: dict[str, Any]) -> dict[str, Any]:
    # max_batch_size > 0: dims leave out the batch dimension
    return {"name": t["name"], "data_type": TRITON_TYPES[t["datatype"]], "dims": t["shape"][1:]}


def _state_dims(card: ModelCard) -> list[int]:
    # per sequence: the batcher stacks sequences on the batch axis ([layers, batch, hidden])
    return [card.num_layers, card.hidden_size]


def model_config(
    card: ModelCard, settings: Settings, provider: str, ttl_s: float, stateless: bool = False
) -> dict[str, Any]:
    """Triton's ``ModelConfig`` as JSON (field names of ``model_config.proto``; integers as
    JSON numbers, as Triton's HTTP endpoint renders them)."""
    queue_delay_us = round(settings.max_queue_delay_ms * 1000)
    gpu = "CUDA" in provider or "Tensorrt" in provider
    x, y = _tensors(card)
    config: dict[str, Any] = {
        "name": view_name(card, stateless),
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": settings.max_batch_size,
        "input": [_io(x)],
        "output": [_io(y)],
        "instance_group": [
            {
                "name": f"{card.name}_0",
                "kind": "KIND_GPU" if gpu else "KIND_CPU",
                "count": settings.inference_workers,
                "gpus": [0] if gpu else [],
            }
        ],
        "default_model_filename": card.onnx_path.name,
        "parameters": {"execution_provider": {"string_value": provider}},
    }
    if stateless:
        config["dynamic_batching"] = {
            "preferred_batch_size": [settings.max_batch_size],
            "max_queue_delay_microseconds": queue_delay_us,
        }
        return config
    dims = _state_dims(card)
    config["sequence_batching"] = {
        "max_sequence_idle_microseconds": round(ttl_s * 1_000_000),
        "oldest": {
            "max_candidate_sequences": settings.max_batch_size,
            "preferred_batch_size": [settings.max_batch_size],
            "max_queue_delay_microseconds": queue_delay_us,
        },
        "state": [
            {
                "input_name": i,
                "output_name": o,
                "data_type": "TYPE_FP32",
                "dims": dims,
                "initial_state": [{"data_type": "TYPE_FP32", "dims": dims, "zero_data": True, "name": f"{i}_zeros"}],
            }
            for i, o in zip(card.state_inputs, card.state_outputs, strict=True)
        ],
    }
    return config
