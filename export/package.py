"""Write a model directory of the model repository: ``model.onnx`` + ``model.json``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import onnx

from export.contract import card_tensors
from export.model import Forecaster
from export.onnx_graph import IR_VERSION, OPSET, build


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_model_dir(model: Forecaster, out_dir: Path, card: dict[str, Any]) -> Path:
    """Export ``model`` to ``out_dir/model.onnx`` and write the card to ``out_dir/model.json``.

    ``card`` holds what only the caller knows (name, version, dataset, metrics...); the
    tensor contract, sizes, opset and checksum are filled in here.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    onnx.save_model(build(model, doc=str(card.get("description", ""))), str(onnx_path))
    full = {
        **card,
        "platform": "onnxruntime_onnx",
        "file": onnx_path.name,
        "sha256": sha256(onnx_path),
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
        "n_features": model.n_features,
        "n_outputs": model.n_outputs,
        **card_tensors("lstm", model.num_layers, model.hidden_size, model.n_features, model.n_outputs, lengths=True),
    }
    (out_dir / "model.json").write_text(json.dumps(full, indent=2) + "\n")
    return onnx_path
