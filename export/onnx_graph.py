"""Build the ONNX graph of a :class:`~export.model.Forecaster` directly from its weights.

The graph is written node by node (rather than traced) so that it is exactly the model
contract of the service:

* inputs ``x`` float32 ``[batch, seq, 3]``, ``h0``/``c0`` float32 ``[layers, batch, hidden]``
  and the optional ``lengths`` int32 ``[batch]`` (per-row valid steps; it defaults to
  "every row is ``seq`` long");
* outputs ``y`` float32 ``[batch, seq, 1]``, ``hn``/``cn`` shaped like ``h0``;
* ``batch`` and ``seq`` dynamic on every input and output;
* demand scaling, the calendar encoding (one-hot half hour and day, or sin/cos harmonics)
  and the output scaling inside the graph (real units in and out);
* the LSTM weight matrices stored as float16 and cast to float32 in the graph when the
  model asks for it (``half_weights``: the default model, whose 416 units would take 3.2 MB
  in float32);
* one ONNX ``LSTM`` node per layer, with ``lengths`` wired into its ``sequence_lens``, so
  rows of different lengths in one padded batch each get their own exact final state.
  Outputs at padded positions (``t >= lengths[row]``) are meaningless and must be ignored.

``lengths`` is a graph input backed by an initializer (``[INT32_MAX]``): a caller that
does not feed it gets full-length rows; one that does feeds ``[batch]`` values, which are
clipped to ``seq``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.model import DAYS_PER_WEEK, HOURS_PER_DAY, Forecaster
from export.reference import ONNX_ORDER, TORCH_ORDER, split_gates, stack_gates

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.10, including older CUDA builds


def _torch_weights(model: Forecaster) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def _reorder(stacked: np.ndarray) -> np.ndarray:
    """PyTorch gate order (i, f, g, o) -> ONNX gate order (i, o, f, c)."""
    return stack_gates(split_gates(stacked, TORCH_ORDER), ONNX_ORDER)


def build(model: Forecaster, doc: str = "") -> onnx.ModelProto:
    sd = _torch_weights(model)
    H, L = model.hidden_size, model.num_layers
    f32 = np.float32
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    mean = const("scale.mean", np.array(sd["pre.mean"], f32))
    std = const("scale.std", np.array(sd["pre.std"], f32))
    n_extra = model.pre.n_extra
    if n_extra:  # exogenous features after the calendar, scaled by their training statistics
        extra_mean = const("scale.extra_mean", sd["pre.extra_mean"].astype(f32))
        extra_std = const("scale.extra_std", sd["pre.extra_std"].astype(f32))
    # angles ((value * k) mod period) * 2 pi / period: exact products on the calendar grid
    if model.pre.day_onehot:
        day_slots = const("cal.day_slots", sd["pre.day_slots"].astype(f32))  # [7] days
    else:
        day_k = const("cal.day_k", sd["pre.day_k"].astype(f32))  # [K] harmonic numbers
        day_period = const("cal.day_period", np.array(DAYS_PER_WEEK, f32))
        day_rad = const("cal.day_rad", np.array(sd["pre.day_rad"], f32))
    if model.pre.hour_onehot:
        hour_slots = const("cal.hour_slots", sd["pre.hour_slots"].astype(f32))  # [48] half hours
    else:
        hour_k = const("cal.hour_k", sd["pre.hour_k"].astype(f32))
        hour_period = const("cal.hour_period", np.array(HOURS_PER_DAY, f32))
        hour_rad = const("cal.hour_rad", np.array(sd["pre.hour_rad"], f32))
    skip = const("head.skip", np.array(sd["skip"], f32))
    offset = const("head.offset", np.array(sd["offset"], f32))
    out_scale = const("head.scale", np.array(sd["out_scale"], f32))
    split3 = const("split3", np.array([1, 1, 1, *([n_extra] if n_extra else [])], np.int64))
    const("head.W", sd["head.weight"].T.astype(f32))
    const("head.b", sd["head.bias"].astype(f32))
    # float16 storage halves the file; the LSTM nodes get the float32 cast (exact) of the same values
    wtype = np.float16 if model.half_weights else f32
    for k in range(L):
        const(f"lstm{k}.W", _reorder(sd[f"lstm.weight_ih_l{k}"])[None].astype(wtype))
        const(f"lstm{k}.R", _reorder(sd[f"lstm.weight_hh_l{k}"])[None].astype(wtype))
        b = np.concatenate([_reorder(sd[f"lstm.bias_ih_l{k}"]), _reorder(sd[f"lstm.bias_hh_l{k}"])])
        const(f"lstm{k}.B", b[None].astype(f32))
    default_len = np.array([np.iinfo(np.int32).max], np.int32)
    lengths_init = numpy_helper.from_array(default_len, "lengths")
    const("axis0", np.array([0], np.int64))
    const("one", np.array([1], np.int64))
    for k in range(max(L, 2) + 1):  # layer bounds, and the batch/seq dims of the shape
        const(f"idx{k}", np.array([k], np.int64))

    N = helper.make_node
    nodes = [
        # features in real units -> model units
        N("Split", ["x", split3], ["demand", "hour", "day", *(["extra"] if n_extra else [])], axis=2),
        N("Sub", ["demand", mean], ["demand_c"]),
        N("Div", ["demand_c", std], ["demand_z"]),
    ]
    extra_feat = []
    if n_extra:
        nodes += [N("Sub", ["extra", extra_mean], ["extra_c"]), N("Div", ["extra_c", extra_std], ["extra_z"])]
        extra_feat = ["extra_z"]
    if model.pre.day_onehot:
        nodes += [
            N("Equal", ["day", day_slots], ["day_eq"]),  # [batch, seq, 7]: exact on whole days
            N("Cast", ["day_eq"], ["day_onehot"], to=TensorProto.FLOAT),
        ]
        day_feat = ["day_onehot"]
    else:
        nodes += [
            N("Mul", ["day", day_k], ["day_kx"]),  # [batch, seq, 1] * [K] -> [batch, seq, K]
            N("Mod", ["day_kx", day_period], ["day_m"], fmod=1),
            N("Mul", ["day_m", day_rad], ["day_a"]),
            N("Sin", ["day_a"], ["day_sin"]),
            N("Cos", ["day_a"], ["day_cos"]),
        ]
        day_feat = ["day_sin", "day_cos"]
    if model.pre.hour_onehot:
        nodes += [
            N("Equal", ["hour", hour_slots], ["hour_eq"]),  # [batch, seq, 48]: exact on the half-hour grid
            N("Cast", ["hour_eq"], ["hour_onehot"], to=TensorProto.FLOAT),
        ]
        hour_feat = ["hour_onehot"]
    else:
        nodes += [
            N("Mul", ["hour", hour_k], ["hour_kx"]),
            N("Mod", ["hour_kx", hour_period], ["hour_m"], fmod=1),
            N("Mul", ["hour_m", hour_rad], ["hour_a"]),
            N("Sin", ["hour_a"], ["hour_sin"]),
            N("Cos", ["hour_a"], ["hour_cos"]),
        ]
        hour_feat = ["hour_sin", "hour_cos"]
    nodes += [
        N("Concat", ["demand_z", *hour_feat, *day_feat, *extra_feat], ["feat"], axis=2),
        N("Transpose", ["feat"], ["seq0"], perm=[1, 0, 2]),  # [seq, batch, features]
        # per-row lengths: broadcast to [batch], clip to seq
        N("Shape", ["x"], ["x_shape"]),
        N("Slice", ["x_shape", "idx0", "idx1"], ["batch_dim"]),
        N("Slice", ["x_shape", "idx1", "idx2"], ["seq_dim"]),
        N("Expand", ["lengths", "batch_dim"], ["lengths_b"]),
        N("Cast", ["seq_dim"], ["seq_dim32"], to=TensorProto.INT32),
        N("Min", ["lengths_b", "seq_dim32"], ["seq_lens"]),
    ]
    hn_parts, cn_parts = [], []
    weights = {}
    for k in range(L):
        if model.half_weights:
            nodes += [
                N("Cast", [f"lstm{k}.W"], [f"lstm{k}.W32"], to=TensorProto.FLOAT),
                N("Cast", [f"lstm{k}.R"], [f"lstm{k}.R32"], to=TensorProto.FLOAT),
            ]
            weights[k] = (f"lstm{k}.W32", f"lstm{k}.R32")
        else:
            weights[k] = (f"lstm{k}.W", f"lstm{k}.R")
    for k in range(L):
        nodes += [
            N("Slice", ["h0", f"idx{k}", f"idx{k + 1}", "axis0"], [f"h0_{k}"]),
            N("Slice", ["c0", f"idx{k}", f"idx{k + 1}", "axis0"], [f"c0_{k}"]),
            N(
                "LSTM",
                [f"seq{k}", *weights[k], f"lstm{k}.B", "seq_lens", f"h0_{k}", f"c0_{k}"],
                [f"Y{k}", f"hn_{k}", f"cn_{k}"],
                hidden_size=H,
                direction="forward",
                name=f"lstm_layer{k}",
            ),
            N("Squeeze", [f"Y{k}", "one"], [f"seq{k + 1}"]),  # [seq, 1, batch, H] -> [seq, batch, H]
        ]
        hn_parts.append(f"hn_{k}")
        cn_parts.append(f"cn_{k}")
    nodes += [
        N("Concat", hn_parts, ["hn"], axis=0),
        N("Concat", cn_parts, ["cn"], axis=0),
        N("Transpose", [f"seq{L}"], ["out"], perm=[1, 0, 2]),  # [batch, seq, H]
        N("MatMul", ["out", "head.W"], ["head_mm"]),
        N("Add", ["head_mm", "head.b"], ["y_z"]),
        # y = skip * demand + offset + scale * head: the level (skip 0) or a change (skip 1)
        N("Mul", ["y_z", out_scale], ["y_s"]),
        N("Mul", ["demand", skip], ["y_skip"]),
        N("Add", ["y_skip", offset], ["y_base"]),
        N("Add", ["y_s", "y_base"], ["y"]),
    ]

    def vi(name: str, dtype: int, shape: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, dtype, shape)

    FP = TensorProto.FLOAT
    state = [L, "batch", H]
    graph = helper.make_graph(
        nodes,
        "lstm_forecaster",
        inputs=[
            vi("x", FP, ["batch", "seq", model.n_features]),
            vi("h0", FP, state),
            vi("c0", FP, state),
            vi("lengths", TensorProto.INT32, ["lengths_batch"]),
        ],
        outputs=[
            vi("y", FP, ["batch", "seq", model.n_outputs]),
            vi("hn", FP, state),
            vi("cn", FP, state),
        ],
        initializer=[*inits, lengths_init],
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="lstm-serving-export",
        doc_string=doc,
    )
    onnx_model.ir_version = IR_VERSION
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
