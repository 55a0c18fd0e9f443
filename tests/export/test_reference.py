"""The numpy cell equations against torch, one step and whole sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export import reference as ref
from export.model import Forecaster


def _state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_one_cell_step_matches_torch_lstmcell():
    torch.manual_seed(1)
    cell = torch.nn.LSTMCell(5, 16)
    sd = _state_dict(cell)
    w = ref.LayerWeights(
        W=ref.split_gates(sd["weight_ih"], ref.TORCH_ORDER),
        U=ref.split_gates(sd["weight_hh"], ref.TORCH_ORDER),
        b={
            g: a + b
            for (g, a), b in zip(
                ref.split_gates(sd["bias_ih"], ref.TORCH_ORDER).items(),
                ref.split_gates(sd["bias_hh"], ref.TORCH_ORDER).values(),
                strict=True,
            )
        },
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    h = rng.uniform(-1, 1, (4, 16)).astype(np.float32)
    c = rng.normal(size=(4, 16)).astype(np.float32)
    h1, c1 = ref.cell(w, x, h, c)
    th, tc = cell(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
    assert np.max(np.abs(h1 - th.detach().numpy())) < 1e-6
    assert np.max(np.abs(c1 - tc.detach().numpy())) < 1e-6


@pytest.mark.parametrize("batch,seq", [(1, 1), (3, 17)])
def test_full_model_matches_torch_forecaster(batch, seq):
    torch.manual_seed(2)
    model = Forecaster(hidden_size=12, num_layers=3, mean=30_000, std=4_000).eval()
    r = ref.from_torch(_state_dict(model), 3)
    rng = np.random.default_rng(3)
    x = np.stack(
        [rng.uniform(2e4, 4e4, (batch, seq)), rng.uniform(0, 24, (batch, seq)), rng.integers(0, 7, (batch, seq))],
        axis=-1,
    ).astype(np.float32)
    h0 = rng.uniform(-1, 1, (3, batch, 12)).astype(np.float32)
    c0 = rng.normal(size=(3, batch, 12)).astype(np.float32)
    y, hn, cn = ref.run(r, x, h0, c0, scaled=True)
    with torch.no_grad():
        ty, th, tc = model.forward_scaled(*(torch.from_numpy(a) for a in (x, h0, c0)))
    assert np.max(np.abs(y - ty.numpy())) < 1e-5
    assert np.max(np.abs(hn - th.numpy())) < 1e-5
    assert np.max(np.abs(cn - tc.numpy())) < 1e-5


def test_wrong_gate_order_is_caught():
    """Reading PyTorch weights as if they were in ONNX order must not pass."""
    torch.manual_seed(4)
    model = Forecaster(hidden_size=8, num_layers=2, mean=30_000, std=4_000).eval()
    sd = _state_dict(model)
    good = ref.from_torch(sd, 2)
    bad = ref.from_torch(sd, 2)
    for layer in bad.layers:
        layer.W["f"], layer.W["o"] = layer.W["o"], layer.W["f"]
    x = np.zeros((1, 5, 3), np.float32)
    x[..., 0] = 31_000
    s = np.full((2, 1, 8), 0.5, np.float32)
    assert np.max(np.abs(ref.run(good, x, s, s)[1] - ref.run(bad, x, s, s)[1])) > 1e-3
