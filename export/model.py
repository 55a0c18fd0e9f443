"""The forecaster: calendar/scaling preprocessing, a stack of LSTM layers, a linear head.

The state is explicit: ``forward(x, h0, c0)`` returns ``(y, hn, cn)`` with
``h0``/``c0`` shaped ``[num_layers, batch, hidden]``. Scaling of the demand, the
calendar encoding and the output scaling are buffers of the module, so the module --
and the ONNX graph exported from it -- take and return real units.

Two choices shape what the network has to learn:

* the calendar encoding: ``hour_harmonics`` sin/cos pairs of the hour of day (k = 1..K
  cycles a day) and ``day_harmonics`` pairs of the day of week (k = 1..K cycles a week;
  three pairs span every function of the seven days);
* the output: with ``residual=True`` the head predicts the change from the current
  reading, ``y = demand + out_scale * head(h)``; otherwise the level,
  ``y = mean + std * head(h)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def harmonics(k: int, period: float) -> torch.Tensor:
    """Angular frequencies ``2 pi j / period`` for j = 1..k."""
    return torch.arange(1, k + 1, dtype=torch.float32) * (2 * math.pi / period)


class Preprocess(nn.Module):
    """``[demand MW, hour_of_day, day_of_week]`` -> ``[z, sin/cos hour harmonics, sin/cos day harmonics]``."""

    def __init__(self, mean: float, std: float, hour_harmonics: int = 1, day_harmonics: int = 1) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.register_buffer("hour_k", harmonics(hour_harmonics, 24.0))
        self.register_buffer("day_k", harmonics(day_harmonics, 7.0))
        self.n_out = 1 + 2 * hour_harmonics + 2 * day_harmonics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        demand, hour, dow = x[..., 0:1], x[..., 1:2], x[..., 2:3]
        ha = hour * self.hour_k
        da = dow * self.day_k
        z = (demand - self.mean) / self.std
        return torch.cat([z, ha.sin(), ha.cos(), da.sin(), da.cos()], dim=-1)


class Forecaster(nn.Module):
    def __init__(
        self,
        n_features: int = 3,
        hidden_size: int = 64,
        num_layers: int = 2,
        n_outputs: int = 1,
        mean: float = 0.0,
        std: float = 1.0,
        hour_harmonics: int = 1,
        day_harmonics: int = 1,
        residual: bool = False,
        out_scale: float | None = None,
    ) -> None:
        super().__init__()
        if n_features != 3:
            raise ValueError("the preprocessing expects 3 features: demand, hour, day of week")
        if hidden_size <= 0 or num_layers <= 0 or n_outputs <= 0:
            raise ValueError("hidden_size, num_layers and n_outputs must be positive")
        if hour_harmonics <= 0 or day_harmonics <= 0:
            raise ValueError("hour_harmonics and day_harmonics must be positive")
        if residual and n_outputs != 1:
            raise ValueError("a residual head forecasts the one demand feature: n_outputs must be 1")
        self.n_features = n_features
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.n_outputs = n_outputs
        self.residual = residual
        self.pre = Preprocess(mean, std, hour_harmonics, day_harmonics)
        self.lstm = nn.LSTM(self.pre.n_out, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_outputs)
        # y = skip * demand + offset + out_scale * head(h)
        self.register_buffer("out_scale", torch.tensor(float(out_scale if out_scale is not None else std)))
        self.register_buffer("skip", torch.tensor(1.0 if residual else 0.0))
        self.register_buffer("offset", torch.tensor(0.0 if residual else float(mean)))

    def zero_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.num_layers, batch, self.hidden_size)
        return torch.zeros(shape), torch.zeros(shape)

    def forward_scaled(
        self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like :meth:`forward`, but ``y`` is the head's output (what training fits)."""
        out, (hn, cn) = self.lstm(self.pre(x), (h0, c0))
        return self.head(out), hn, cn

    def unscale(self, x: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Head output -> forecast in MW."""
        return self.skip * x[..., 0:1] + self.offset + self.out_scale * ys

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ys, hn, cn = self.forward_scaled(x, h0, c0)
        return self.unscale(x, ys), hn, cn


def ensemble(members: list[Forecaster]) -> Forecaster:
    """One :class:`Forecaster` that runs ``members`` side by side and averages their forecasts.

    The members must share preprocessing, output scaling and sizes. The result has
    ``hidden = K * member hidden``: each layer's weights are block diagonal (member j owns
    hidden units ``[j*H, (j+1)*H)`` of every layer and sees only its own units below and
    its own recurrent units), the first layer's input weights are stacked, and the head
    concatenates the members' heads divided by K. It is still a plain stacked LSTM with one
    (h, C) pair per layer, so the ONNX graph and the numpy cell equations are unchanged;
    its output equals the mean of the members' outputs (up to float32 rounding).
    """
    first = members[0]
    k, h, layers = len(members), first.hidden_size, first.num_layers
    for m in members[1:]:
        if (m.hidden_size, m.num_layers, m.residual) != (h, layers, first.residual):
            raise ValueError("ensemble members must have the same sizes and head")
    for name in ("pre.mean", "pre.std", "pre.hour_k", "pre.day_k", "out_scale", "skip", "offset"):
        ref = first.state_dict()[name]
        if any(not torch.equal(m.state_dict()[name], ref) for m in members[1:]):
            raise ValueError(f"ensemble members differ in {name}")
    merged = Forecaster(
        hidden_size=k * h,
        num_layers=layers,
        n_outputs=first.n_outputs,
        mean=float(first.pre.mean),
        std=float(first.pre.std),
        hour_harmonics=len(first.pre.hour_k),
        day_harmonics=len(first.pre.day_k),
        residual=first.residual,
        out_scale=float(first.out_scale),
    )
    sd = {name: torch.zeros_like(v) for name, v in merged.state_dict().items()}
    for name in ("pre.mean", "pre.std", "pre.hour_k", "pre.day_k", "out_scale", "skip", "offset"):
        sd[name] = first.state_dict()[name].clone()
    for j, m in enumerate(members):
        msd = m.state_dict()
        for layer in range(layers):
            for gate in range(4):  # the four gate blocks of PyTorch's stacked layout
                rows = slice(gate * k * h + j * h, gate * k * h + (j + 1) * h)
                src = slice(gate * h, (gate + 1) * h)
                own = slice(j * h, (j + 1) * h)
                w_ih = msd[f"lstm.weight_ih_l{layer}"][src]
                if layer == 0:
                    sd[f"lstm.weight_ih_l{layer}"][rows] = w_ih
                else:
                    sd[f"lstm.weight_ih_l{layer}"][rows, own] = w_ih
                sd[f"lstm.weight_hh_l{layer}"][rows, own] = msd[f"lstm.weight_hh_l{layer}"][src]
                sd[f"lstm.bias_ih_l{layer}"][rows] = msd[f"lstm.bias_ih_l{layer}"][src]
                sd[f"lstm.bias_hh_l{layer}"][rows] = msd[f"lstm.bias_hh_l{layer}"][src]
        sd["head.weight"][:, j * h : (j + 1) * h] = msd["head.weight"] / k
        sd["head.bias"] += msd["head.bias"] / k
    merged.load_state_dict(sd)
    return merged.eval()
