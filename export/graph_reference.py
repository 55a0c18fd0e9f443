"""The recurrent part of any imported graph, recomputed in numpy from the graph's own weights.

An imported model (``lstm-import``) is a stack of ONNX ``LSTM`` or ``GRU`` nodes as
``torch.onnx.export`` writes ``nn.LSTM`` / ``nn.GRU``: layer ``k`` starts from ``h0[k]`` (and
``c0[k]``), takes the previous layer's output sequence, and its final state is ``hn[k]``
(``cn[k]``). What comes after the last layer (a head) is the user's own and is not
recomputed: this reference gives the final states, which come straight from the nodes.

The cell equations are ONNX's (operator docs, gate orders ``i o f c`` for LSTM and
``z r h`` for GRU, biases ``Wb`` then ``Rb``), written out here without onnxruntime:

    LSTM: i = σ(Wi x + Ri h + bi), o = σ(...), f = σ(...), c~ = tanh(...),
          C = f ⊙ C + i ⊙ c~, h = o ⊙ tanh(C)
    GRU:  z = σ(Wz x + Rz h + bz), r = σ(Wr x + Rr h + br),
          h~ = tanh(Wh x + r ⊙ (Rh h + Rbh) + Wbh)   (linear_before_reset = 1, torch's)
          h~ = tanh(Wh x + Rh (r ⊙ h) + Rbh + Wbh)     (linear_before_reset = 0)
          h = (1 - z) ⊙ h~ + z ⊙ h
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from export import reference as ref


class NotStacked(Exception):
    """The graph's recurrent nodes are not a plain forward stack this reference can recompute."""


@dataclass
class Gru:
    """One ONNX ``GRU`` node's weights, split by gate (z, r, h) once."""

    W: tuple[np.ndarray, np.ndarray, np.ndarray]  # [H, in] each
    R: tuple[np.ndarray, np.ndarray, np.ndarray]  # [H, H] each
    Wb: tuple[np.ndarray, np.ndarray, np.ndarray]
    Rb: tuple[np.ndarray, np.ndarray, np.ndarray]
    linear_before_reset: bool


Layer = ref.LayerWeights | Gru  # an LSTM layer by gate name (export.reference), or a GRU layer


def layers(model: Any) -> list[Layer]:
    """The recurrent nodes of ``model`` (an ``onnx.ModelProto``), in graph order."""
    from onnx import helper, numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out: list[Layer] = []
    for node in model.graph.node:
        if node.op_type not in ("LSTM", "GRU"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("direction", b"forward") not in (b"forward", "forward") or attrs.get("layout", 0) != 0:
            raise NotStacked(f"node {node.name or node.op_type}: only forward, sequence-major nodes are recomputed")
        if node.op_type == "LSTM" and len(node.input) > 7 and node.input[7]:
            raise NotStacked(f"node {node.name}: peephole weights are not recomputed")
        try:
            W, R = inits[node.input[1]][0], inits[node.input[2]][0]
        except KeyError:
            raise NotStacked(f"node {node.name}: its weights are computed in the graph, not stored") from None
        gates_h = W.shape[0]
        B = inits[node.input[3]][0] if len(node.input) > 3 and node.input[3] else np.zeros(2 * gates_h, W.dtype)
        if node.op_type == "LSTM":
            out.append(ref.onnx_layer(W, R, B))
            continue
        wb, rb = np.split(np.asarray(B, np.float64), 2)
        w, r, bw, br = (tuple(np.split(np.asarray(a, np.float64), 3)) for a in (W, R, wb, rb))
        out.append(Gru(w, r, bw, br, bool(attrs.get("linear_before_reset", 0))))  # type: ignore[arg-type]
    if not out:
        raise NotStacked("the graph has no LSTM or GRU node")
    return out


def run(stack: list[Layer], x: np.ndarray, state: list[np.ndarray]) -> list[np.ndarray]:
    """Final states ``[hn, cn]`` (LSTM) or ``[hn]`` (GRU), each ``[layers, batch, hidden]``,
    from batch-first ``x [batch, seq, features]`` and ``state`` ``[h0, c0]`` / ``[h0]``."""
    seq = np.asarray(x, np.float64)
    finals: list[list[np.ndarray]] = [[] for _ in state]
    for k, layer in enumerate(stack):
        h = np.asarray(state[0][k], np.float64)
        c = np.asarray(state[1][k], np.float64) if isinstance(layer, ref.LayerWeights) else None
        outs = []
        for t in range(seq.shape[1]):
            if isinstance(layer, ref.LayerWeights):
                assert c is not None
                h, c = ref.cell(layer, seq[:, t], h, c)
            else:
                (Wz, Wr, Wh), (Rz, Rr, Rh), (wz, wr, wh), (bz, br, bh) = layer.W, layer.R, layer.Wb, layer.Rb
                z = ref.sigmoid(seq[:, t] @ Wz.T + wz + h @ Rz.T + bz)
                r = ref.sigmoid(seq[:, t] @ Wr.T + wr + h @ Rr.T + br)
                if layer.linear_before_reset:
                    cand = np.tanh(seq[:, t] @ Wh.T + wh + r * (h @ Rh.T + bh))
                else:
                    cand = np.tanh(seq[:, t] @ Wh.T + wh + (r * h) @ Rh.T + bh)
                h = (1.0 - z) * cand + z * h
            outs.append(h)
        seq = np.stack(outs, axis=1)
        finals[0].append(h)
        if c is not None:
            finals[1].append(c)
    return [np.stack(f) for f in finals]
