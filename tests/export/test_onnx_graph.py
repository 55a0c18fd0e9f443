"""The hand-built ONNX graph: the model contract, and equality with the torch module."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.model import Forecaster
from export.onnx_graph import build


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    model = Forecaster(hidden_size=24, num_layers=2, mean=30_000, std=4_000).eval()
    proto = build(model)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return model, proto, ort.InferenceSession(proto.SerializeToString(), opts)


def _inputs(rng, batch, seq, hidden=24):
    x = np.stack(
        [rng.uniform(2e4, 4e4, (batch, seq)), rng.integers(0, 48, (batch, seq)) / 2, rng.integers(0, 7, (batch, seq))],
        axis=-1,
    ).astype(np.float32)
    return (
        x,
        rng.uniform(-1, 1, (2, batch, hidden)).astype(np.float32),
        rng.normal(size=(2, batch, hidden)).astype(np.float32),
    )


def test_contract_names_and_dynamic_axes(pair):
    _, proto, sess = pair
    ins = {i.name: i.shape for i in sess.get_inputs()}
    outs = {o.name: o.shape for o in sess.get_outputs()}
    assert ins == {"x": ["batch", "seq", 3], "h0": [2, "batch", 24], "c0": [2, "batch", 24]}
    # lengths is optional: an input backed by a default, so onnxruntime lists it apart
    assert [(i.name, i.shape) for i in sess.get_overridable_initializers()] == [("lengths", ["lengths_batch"])]
    assert outs == {"y": ["batch", "seq", 1], "hn": [2, "batch", 24], "cn": [2, "batch", 24]}
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


@pytest.mark.parametrize("batch,seq", [(1, 1), (5, 31)])
def test_onnxruntime_equals_torch_in_real_units(pair, batch, seq):
    model, _, sess = pair
    x, h0, c0 = _inputs(np.random.default_rng(batch), batch, seq)
    y, hn, cn = sess.run(None, {"x": x, "h0": h0, "c0": c0})
    with torch.no_grad():
        ty, th, tc = model(*(torch.from_numpy(a) for a in (x, h0, c0)))
    assert np.max(np.abs(y - ty.numpy())) / 4_000 < 1e-5  # scaled units, see export.verify
    assert np.max(np.abs(hn - th.numpy())) < 1e-5
    assert np.max(np.abs(cn - tc.numpy())) < 1e-5


def test_lengths_longer_than_seq_are_clipped(pair):
    _, _, sess = pair
    x, h0, c0 = _inputs(np.random.default_rng(9), 3, 6)
    full = sess.run(None, {"x": x, "h0": h0, "c0": c0})
    clipped = sess.run(None, {"x": x, "h0": h0, "c0": c0, "lengths": np.array([6, 100, 7], np.int32)})
    for a, b in zip(full, clipped, strict=True):
        np.testing.assert_array_equal(a, b)
