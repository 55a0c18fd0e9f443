"""The forecaster: calendar/scaling preprocessing, a stack of LSTM layers, a linear head.

The state is explicit: ``forward(x, h0, c0)`` returns ``(y, hn, cn)`` with
``h0``/``c0`` shaped ``[num_layers, batch, hidden]``. Scaling of the demand and the
sin/cos encoding of the calendar features are buffers of the module, so the module --
and the ONNX graph exported from it -- take and return real units.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Preprocess(nn.Module):
    """``[demand MW, hour_of_day, day_of_week]`` -> ``[z, sin/cos hour, sin/cos day]``."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        demand, hour, dow = x[..., 0:1], x[..., 1:2], x[..., 2:3]
        ha = hour * (2 * math.pi / 24.0)
        da = dow * (2 * math.pi / 7.0)
        z = (demand - self.mean) / self.std
        return torch.cat([z, ha.sin(), ha.cos(), da.sin(), da.cos()], dim=-1)


N_INPUTS = 5  # what Preprocess produces per time step


class Forecaster(nn.Module):
    def __init__(
        self,
        n_features: int = 3,
        hidden_size: int = 64,
        num_layers: int = 2,
        n_outputs: int = 1,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        super().__init__()
        if n_features != 3:
            raise ValueError("the preprocessing expects 3 features: demand, hour, day of week")
        if hidden_size <= 0 or num_layers <= 0 or n_outputs <= 0:
            raise ValueError("hidden_size, num_layers and n_outputs must be positive")
        self.n_features = n_features
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.n_outputs = n_outputs
        self.pre = Preprocess(mean, std)
        self.lstm = nn.LSTM(N_INPUTS, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_outputs)

    def zero_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.num_layers, batch, self.hidden_size)
        return torch.zeros(shape), torch.zeros(shape)

    def forward_scaled(
        self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like :meth:`forward`, but ``y`` in scaled units (what training minimises)."""
        out, (hn, cn) = self.lstm(self.pre(x), (h0, c0))
        return self.head(out), hn, cn

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ys, hn, cn = self.forward_scaled(x, h0, c0)
        return ys * self.pre.std + self.pre.mean, hn, cn
