"""The tensor contract every served model follows, in the model card's terms: ``x [batch, seq,
features]`` in, ``y [batch, seq, outputs]`` out, and the recurrent state as named tensors
``[layers, batch, hidden]`` -- ``h0, c0 -> hn, cn`` for an LSTM, ``h0 -> hn`` for a GRU -- with
an optional ``lengths [batch]`` input where the graph takes per-row lengths.

The exporter (:mod:`export.package`) and the importer (:mod:`export.lstm_import`) write these
entries into ``model.json`` from here; the service reads them back from the card
(``ModelCard.states``, ``state_inputs``, ``state_outputs``)."""

from __future__ import annotations

from typing import Any

STATE = {"lstm": (("h0", "c0"), ("hn", "cn")), "gru": (("h0",), ("hn",))}
LAYOUT = "[layers, batch, hidden]"
LENGTHS = "lengths"


def card_tensors(cell: str, layers: int, hidden: int, features: int, outputs: int, lengths: bool) -> dict[str, Any]:
    """The card's ``state``, ``inputs`` and ``outputs`` entries (and ``lengths_input`` when the
    graph takes per-row lengths), -1 for the dynamic axes."""
    ins, outs = STATE[cell]
    state = [layers, -1, hidden]
    tensor = {"datatype": "FP32", "shape": state}
    return {
        "state": {"inputs": list(ins), "outputs": list(outs), "layout": LAYOUT},
        **({"lengths_input": LENGTHS} if lengths else {}),
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, -1, features]},
            *({"name": n, **tensor} for n in ins),
            *([{"name": LENGTHS, "datatype": "INT32", "shape": [-1], "optional": True}] if lengths else []),
        ],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [-1, -1, outputs]},
            *({"name": n, **tensor} for n in outs),
        ],
    }
