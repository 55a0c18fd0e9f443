"""Triton's model configuration for a served model version, built from its card and the
settings: the one place both transports (REST ``/config`` when it exists, gRPC ``ModelConfig``)
take it from. The dict uses the JSON names of Triton's ``model_config.proto``.

The tensors are described with their full shapes and ``max_batch_size`` 0: the state
tensors carry the batch on axis 1 (``[layers, batch, hidden]``), which Triton's batch-first
dims cannot express. Scheduling is ``sequence_batching`` (Triton allows one scheduler): the
"oldest" strategy is what the batcher does for stateless requests and sequences alike, and
a sequence's state is kept on the server (implicit state h0 -> hn, c0 -> cn).
"""

from __future__ import annotations

from typing import Any

from service.api.inference import INPUTS
from service.config import Settings
from service.core.model_worker import ModelWorker


def _tensor(spec: dict[str, Any], optional: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"name": spec["name"], "data_type": f"TYPE_{spec['datatype']}", "dims": list(spec["shape"])}
    if optional:
        t["optional"] = True
    return t


def model_config(w: ModelWorker, settings: Settings) -> dict[str, Any]:
    card = w.card
    state_dims = [card.num_layers, 1, card.hidden_size]
    return {
        "name": card.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [int(card.version)]}},
        "max_batch_size": 0,
        "input": [_tensor(i, optional=i["name"] != "x") for i in card.raw["inputs"] if i["name"] in INPUTS],
        "output": [_tensor(o) for o in card.raw["outputs"]],
        "sequence_batching": {
            "oldest": {
                "max_candidate_sequences": settings.max_batch_size,
                "max_queue_delay_microseconds": int(settings.max_queue_delay_ms * 1000),
            },
            "max_sequence_idle_microseconds": int(settings.session_ttl_s * 1_000_000),
            "state": [
                {"input_name": "h0", "output_name": "hn", "data_type": "TYPE_FP32", "dims": state_dims},
                {"input_name": "c0", "output_name": "cn", "data_type": "TYPE_FP32", "dims": state_dims},
            ],
        },
        "instance_group": [
            {
                "name": card.name,
                "count": settings.inference_workers,
                "kind": "KIND_GPU" if "CUDA" in w.model.provider else "KIND_CPU",
            }
        ],
        "parameters": {"max_rows_per_batch": {"string_value": str(settings.max_batch_size)}},
    }
