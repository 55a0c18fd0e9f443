"""A numpy implementation of the LSTM cell equations, the independent reference.

Written from the classic formulas, one time step at a time, in float64::

    f_t  = sigmoid(W_f x_t + U_f h_{t-1} + b_f)      forget gate
    i_t  = sigmoid(W_i x_t + U_i h_{t-1} + b_i)      input gate
    C~_t = tanh(W_c x_t + U_c h_{t-1} + b_c)         candidate memory
    C_t  = f_t * C_{t-1} + i_t * C~_t                cell update
    o_t  = sigmoid(W_o x_t + U_o h_{t-1} + b_o)      output gate
    h_t  = o_t * tanh(C_t)                           hidden state

Frameworks store the four gates' weights stacked in one matrix, in different orders:

* PyTorch ``nn.LSTM``: ``weight_ih_l{k}`` = [W_i; W_f; W_c; W_o] (its docs call the
  candidate ``g``), ``weight_hh_l{k}`` likewise with U, and two biases ``bias_ih`` and
  ``bias_hh`` that are added together.
* ONNX ``LSTM``: ``W`` = [W_i; W_o; W_f; W_c], ``R`` = [U_i; U_o; U_f; U_c] (shapes
  ``[1, 4H, in]`` and ``[1, 4H, H]``), and ``B`` = [Wb_i, Wb_o, Wb_f, Wb_c, Rb_i, Rb_o,
  Rb_f, Rb_c] (``[1, 8H]``).

:func:`gates_from_torch` and :func:`gates_from_onnx` undo those layouts into named gates,
so the same cell code can be checked against both runtimes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TORCH_ORDER = ("i", "f", "c", "o")
ONNX_ORDER = ("i", "o", "f", "c")


def split_gates(stacked: np.ndarray, order: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Split a ``[4H, ...]`` (or ``[4H]``) stacked array into named gate blocks."""
    blocks = np.split(np.asarray(stacked, np.float64), 4, axis=0)
    return dict(zip(order, blocks, strict=True))


def stack_gates(named: dict[str, np.ndarray], order: tuple[str, ...]) -> np.ndarray:
    return np.concatenate([named[g] for g in order], axis=0)


@dataclass
class LayerWeights:
    """One layer's weights by gate name: W (input), U (recurrent), b (both biases summed)."""

    W: dict[str, np.ndarray]
    U: dict[str, np.ndarray]
    b: dict[str, np.ndarray]


@dataclass
class ReferenceModel:
    layers: list[LayerWeights]
    head_w: np.ndarray  # [n_outputs, H]
    head_b: np.ndarray  # [n_outputs]
    mean: float
    std: float
    hour_k: np.ndarray  # [K] harmonic numbers: k cycles a day (hour of day); empty with hour_slots
    hour_slots: np.ndarray | None  # [48] half hours of a one-hot hour encoding, or None
    day_k: np.ndarray  # [K] harmonic numbers: k cycles a week (day of week); empty with day_slots
    skip: float  # y = skip * demand + offset + out_scale * head(h)
    offset: float
    out_scale: float
    day_slots: np.ndarray | None = None  # [7] days of a one-hot day encoding, or None
    extra_mean: np.ndarray | None = None  # [E] exogenous features after the calendar, or None
    extra_std: np.ndarray | None = None


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def preprocess(x: np.ndarray, model: ReferenceModel) -> np.ndarray:
    """Real units ``[demand, hour, day]`` -> ``[z, one-hot half hour | sin k·h, cos k·h, one-hot day | sin k·d, cos k·d]``."""
    x = np.asarray(x, np.float64)
    if model.hour_slots is not None:
        hour = [(x[..., 1:2] == model.hour_slots).astype(np.float64)]
    else:
        ha = np.fmod(x[..., 1:2] * model.hour_k, 24.0) * (2 * math.pi / 24.0)
        hour = [np.sin(ha), np.cos(ha)]
    if model.day_slots is not None:
        day = [(x[..., 2:3] == model.day_slots).astype(np.float64)]
    else:
        da = np.fmod(x[..., 2:3] * model.day_k, 7.0) * (2 * math.pi / 7.0)
        day = [np.sin(da), np.cos(da)]
    z = (x[..., 0:1] - model.mean) / model.std
    extra = [] if model.extra_mean is None else [(x[..., 3:] - model.extra_mean) / model.extra_std]
    return np.concatenate([z, *hour, *day, *extra], axis=-1)


def cell(w: LayerWeights, x_t: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One time step for a batch: ``x_t [B, in]``, ``h, c [B, H]`` -> new ``(h, c)``."""

    def pre(g: str) -> np.ndarray:
        return x_t @ w.W[g].T + h @ w.U[g].T + w.b[g]

    f = sigmoid(pre("f"))
    i = sigmoid(pre("i"))
    c_tilde = np.tanh(pre("c"))
    c_new = f * c + i * c_tilde
    o = sigmoid(pre("o"))
    h_new = o * np.tanh(c_new)
    return h_new, c_new


def run(
    model: ReferenceModel,
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    scaled: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full forward: ``x [B, T, 3]``, ``h0/c0 [L, B, H]`` -> ``(y [B, T, out], hn, cn)``.

    With ``scaled=True`` the outputs are the head's, before the output scaling
    (``skip * demand + offset + out_scale * head``).
    """
    seq = preprocess(x, model)
    hn, cn = [], []
    for layer, w in enumerate(model.layers):
        h = np.asarray(h0[layer], np.float64)
        c = np.asarray(c0[layer], np.float64)
        outs = []
        for t in range(seq.shape[1]):
            h, c = cell(w, seq[:, t], h, c)
            outs.append(h)
        seq = np.stack(outs, axis=1)
        hn.append(h)
        cn.append(c)
    y = seq @ model.head_w.T + model.head_b
    if not scaled:
        y = model.skip * np.asarray(x, np.float64)[..., 0:1] + model.offset + model.out_scale * y
    return y, np.stack(hn), np.stack(cn)


def _optional(values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, np.float64).reshape(-1)


def from_torch(state_dict: dict[str, np.ndarray], num_layers: int) -> ReferenceModel:
    """Read PyTorch's layout (see module docstring) into named gates."""
    layers = []
    for k in range(num_layers):
        bih = split_gates(state_dict[f"lstm.bias_ih_l{k}"], TORCH_ORDER)
        bhh = split_gates(state_dict[f"lstm.bias_hh_l{k}"], TORCH_ORDER)
        layers.append(
            LayerWeights(
                W=split_gates(state_dict[f"lstm.weight_ih_l{k}"], TORCH_ORDER),
                U=split_gates(state_dict[f"lstm.weight_hh_l{k}"], TORCH_ORDER),
                b={g: bih[g] + bhh[g] for g in TORCH_ORDER},
            )
        )
    return ReferenceModel(
        layers=layers,
        head_w=np.asarray(state_dict["head.weight"], np.float64),
        head_b=np.asarray(state_dict["head.bias"], np.float64),
        mean=float(state_dict["pre.mean"]),
        std=float(state_dict["pre.std"]),
        hour_k=np.asarray(state_dict.get("pre.hour_k", []), np.float64),
        hour_slots=_optional(state_dict.get("pre.hour_slots")),
        day_k=np.asarray(state_dict.get("pre.day_k", []), np.float64),
        skip=float(state_dict["skip"]),
        offset=float(state_dict["offset"]),
        out_scale=float(state_dict["out_scale"]),
        day_slots=_optional(state_dict.get("pre.day_slots")),
        extra_mean=_optional(state_dict.get("pre.extra_mean")),
        extra_std=_optional(state_dict.get("pre.extra_std")),
    )


def onnx_layer(W: np.ndarray, R: np.ndarray, B: np.ndarray) -> LayerWeights:
    """One ONNX ``LSTM`` node's weights (``W [4H, in]``, ``R [4H, H]``, ``B [8H]``: input, then
    recurrent biases, gates in ONNX_ORDER) by gate name."""
    wb, rb = np.split(np.asarray(B, np.float64), 2)
    wbn, rbn = split_gates(wb, ONNX_ORDER), split_gates(rb, ONNX_ORDER)
    return LayerWeights(
        W=split_gates(W, ONNX_ORDER), U=split_gates(R, ONNX_ORDER), b={g: wbn[g] + rbn[g] for g in ONNX_ORDER}
    )


def from_onnx(initializers: dict[str, np.ndarray], num_layers: int) -> ReferenceModel:
    """Read the ONNX LSTM layout (see module docstring) from the graph's initializers."""
    layers = [
        onnx_layer(initializers[f"lstm{k}.W"][0], initializers[f"lstm{k}.R"][0], initializers[f"lstm{k}.B"][0])
        for k in range(num_layers)
    ]
    return ReferenceModel(
        layers=layers,
        head_w=np.asarray(initializers["head.W"], np.float64).T,
        head_b=np.asarray(initializers["head.b"], np.float64),
        mean=float(initializers["scale.mean"]),
        std=float(initializers["scale.std"]),
        hour_k=np.asarray(initializers.get("cal.hour_k", []), np.float64).reshape(-1),
        hour_slots=_optional(initializers.get("cal.hour_slots")),
        day_k=np.asarray(initializers.get("cal.day_k", []), np.float64).reshape(-1),
        skip=float(initializers["head.skip"]),
        offset=float(initializers["head.offset"]),
        out_scale=float(initializers["head.scale"]),
        day_slots=_optional(initializers.get("cal.day_slots")),
        extra_mean=_optional(initializers.get("scale.extra_mean")),
        extra_std=_optional(initializers.get("scale.extra_std")),
    )
