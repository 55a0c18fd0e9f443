"""The forecaster: calendar/scaling preprocessing, a stack of LSTM layers, a linear head.

The state is explicit: ``forward(x, h0, c0)`` returns ``(y, hn, cn)`` with
``h0``/``c0`` shaped ``[num_layers, batch, hidden]``. Scaling of the demand, the
calendar encoding and the output scaling are buffers of the module, so the module --
and the ONNX graph exported from it -- take and return real units.

Two choices shape what the network has to learn:

* the calendar encoding: ``hour_harmonics`` sin/cos pairs of the hour of day (k = 1..K
  cycles a day) or a one-hot of the 48 half hours (``hour_onehot``), and ``day_harmonics``
  pairs of the day of week (k = 1..K cycles a week; three pairs span every function of the
  seven days) or a one-hot of the 7 days (``day_onehot``, exact 0/1 for gates that must
  open on one day);
* the output: with ``residual=True`` the head predicts the change from the current
  reading, ``y = demand + out_scale * head(h)``; otherwise the level,
  ``y = mean + std * head(h)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from export.data import STEPS_PER_DAY, daily_units, hour_of_step, weekly_units

HOURS_PER_DAY = 24.0
DAYS_PER_WEEK = 7.0


def hour_slots(steps_per_day: int) -> torch.Tensor:
    """The hour of day at the start of each step, as float32: ``k * 24 / steps_per_day``
    computed in float64 and rounded once, as :func:`export.data.load_csv` computes the data's."""
    import numpy as np

    return torch.from_numpy(hour_of_step(np.arange(steps_per_day), steps_per_day).astype(np.float32))


DAILY_UNITS = daily_units(STEPS_PER_DAY)  # of the default half-hourly model
WEEKLY_UNITS = weekly_units(STEPS_PER_DAY)


def harmonics(k: int) -> torch.Tensor:
    """Harmonic numbers 1..k (cycles per day, or per week) as float32."""
    return torch.arange(1, k + 1, dtype=torch.float32)


def phase(value: torch.Tensor, cycles: torch.Tensor, period: float, rad: torch.Tensor) -> torch.Tensor:
    """The angle of ``cycles`` harmonics at ``value``: ``((value * cycles) mod period) * 2 pi / period``.

    On the calendar's grid (half hours, whole days) ``value * cycles`` and the remainder are
    exact in float32, so the angle stays below 2 pi and is rounded once: the high harmonics
    are as accurate as the first (``value * 2 pi k / period`` would round angles of up to
    150 rad, an error of ~1e-5).
    """
    return torch.fmod(value * cycles, period) * rad


class Preprocess(nn.Module):
    """``[demand MW, hour_of_day, day_of_week]`` -> ``[z, hour encoding, sin/cos day harmonics]``.

    The hour is encoded either as ``hour_harmonics`` sin/cos pairs (``hour_k`` holds the
    harmonic numbers k = 1..K, k cycles a day) or, with ``hour_onehot``, as a one-hot of the
    48 half hours (``hour_slots`` = 0.0, 0.5, ... 23.5; an hour off that grid is all zeros).
    The day is ``day_harmonics`` sin/cos pairs of k cycles a week.
    """

    def __init__(
        self,
        mean: float,
        std: float,
        hour_harmonics: int = 1,
        day_harmonics: int = 1,
        hour_onehot: bool = False,
        day_onehot: bool = False,
        steps_per_day: int = STEPS_PER_DAY,
        extra_mean: list[float] | None = None,
        extra_std: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        # exogenous features after the calendar (a CSV's --features), scaled by their training stats
        self.n_extra = len(extra_mean or [])
        if self.n_extra:
            self.register_buffer("extra_mean", torch.tensor(extra_mean, dtype=torch.float32))
            self.register_buffer("extra_std", torch.tensor(extra_std, dtype=torch.float32))
        self.hour_onehot = hour_onehot
        if hour_onehot:
            self.register_buffer("hour_slots", hour_slots(steps_per_day))
            n_hour = steps_per_day
        else:
            self.register_buffer("hour_k", harmonics(hour_harmonics))
            self.register_buffer("hour_rad", torch.tensor(2 * math.pi / HOURS_PER_DAY))
            n_hour = 2 * hour_harmonics
        self.day_onehot = day_onehot
        if day_onehot:
            self.register_buffer("day_slots", torch.arange(int(DAYS_PER_WEEK), dtype=torch.float32))
            n_day = int(DAYS_PER_WEEK)
        else:
            self.register_buffer("day_k", harmonics(day_harmonics))
            self.register_buffer("day_rad", torch.tensor(2 * math.pi / DAYS_PER_WEEK))
            n_day = 2 * day_harmonics
        self.n_hour = n_hour
        self.n_day = n_day
        self.n_out = 1 + n_hour + n_day + self.n_extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        demand, hour, dow = x[..., 0:1], x[..., 1:2], x[..., 2:3]
        if self.hour_onehot:
            hour_feat = [(hour == self.hour_slots).to(x.dtype)]
        else:
            ha = phase(hour, self.hour_k, HOURS_PER_DAY, self.hour_rad)
            hour_feat = [ha.sin(), ha.cos()]
        if self.day_onehot:
            day_feat = [(dow == self.day_slots).to(x.dtype)]
        else:
            da = phase(dow, self.day_k, DAYS_PER_WEEK, self.day_rad)
            day_feat = [da.sin(), da.cos()]
        z = (demand - self.mean) / self.std
        extra = [(x[..., 3:] - self.extra_mean) / self.extra_std] if self.n_extra else []
        return torch.cat([z, *hour_feat, *day_feat, *extra], dim=-1)


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
        hour_onehot: bool = False,
        half_weights: bool = False,
        day_onehot: bool = False,
        steps_per_day: int = STEPS_PER_DAY,
        extra_mean: list[float] | None = None,
        extra_std: list[float] | None = None,
    ) -> None:
        super().__init__()
        if n_features != 3 + len(extra_mean or []):
            raise ValueError("the features are the reading, hour, day of week, then one per extra_mean")
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
        # the LSTM weight matrices are stored as float16 in the ONNX graph (cast to float32 there):
        # the torch weights must then hold float16 values (see round_weights_to_half)
        self.half_weights = half_weights
        self.steps_per_day = steps_per_day
        self.pre = Preprocess(
            mean, std, hour_harmonics, day_harmonics, hour_onehot, day_onehot, steps_per_day, extra_mean, extra_std
        )
        self.lstm = nn.LSTM(self.pre.n_out, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_outputs)
        # y = skip * demand + offset + out_scale * head(h)
        self.register_buffer("out_scale", torch.tensor(float(out_scale if out_scale is not None else std)))
        self.register_buffer("skip", torch.tensor(1.0 if residual else 0.0))
        self.register_buffer("offset", torch.tensor(0.0 if residual else float(mean)))

    def round_weights_to_half(self) -> None:
        """Round the LSTM weight matrices to float16 values, as the ONNX graph stores them."""
        with torch.no_grad():
            for name, param in self.lstm.named_parameters():
                if name.startswith("weight_"):
                    param.copy_(param.half().float())

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
    buffers = [n for n in first.state_dict() if not n.startswith(("lstm.", "head."))]
    for m in members[1:]:
        if [n for n in m.state_dict() if not n.startswith(("lstm.", "head."))] != buffers:
            raise ValueError("ensemble members differ in their preprocessing")
    for name in buffers:
        ref = first.state_dict()[name]
        if any(not torch.equal(m.state_dict()[name], ref) for m in members[1:]):
            raise ValueError(f"ensemble members differ in {name}")
    extra = first.pre.n_extra
    merged = Forecaster(
        n_features=first.n_features,
        extra_mean=first.pre.extra_mean.tolist() if extra else None,
        extra_std=first.pre.extra_std.tolist() if extra else None,
        hidden_size=k * h,
        num_layers=layers,
        n_outputs=first.n_outputs,
        mean=float(first.pre.mean),
        std=float(first.pre.std),
        hour_harmonics=first.pre.n_hour // 2,
        day_harmonics=max(1, first.pre.n_day // 2),
        residual=first.residual,
        out_scale=float(first.out_scale),
        hour_onehot=first.pre.hour_onehot,
        half_weights=first.half_weights,
        day_onehot=first.pre.day_onehot,
        steps_per_day=first.steps_per_day,
    )
    sd = {name: torch.zeros_like(v) for name, v in merged.state_dict().items()}
    for name in buffers:
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


def init_daily_memory(
    model: Forecaster, decay: float = 0.7, gate: float = 24.0, prev_scale: float = 2**-7, write_scale: float = 0.5
) -> None:
    """Start the first 49 hidden units of layer 0 as a memory of the half-hourly changes by time of day.

    Unit ``j < 48`` keeps an exponentially weighted mean (weight ``decay`` on the past) of the
    change ``z_t - z_{t-1}`` of the scaled demand seen at half hour ``j + 1`` of each day
    (the change into it): its forget and input gates open only at that half hour, and its
    output gate only at half hour ``j``, when that change is the one to forecast. Unit 48
    holds the previous reading (``h ≈ prev_scale · z_{t-1}``, ``prev_scale`` = 2⁻⁷ so that the
    weights are exact in float16) that the change needs. The
    head starts reading the memory as the forecast change.

    The gates read the one-hot of the half hour (``hour_onehot``), so "is it half hour j?"
    is one exact input, not a sum that cancels. ``gate`` is the pre-activation of a closed
    (or fully open) gate. At 24, sigmoid is 1 to within 4e-11, which float32 rounds to
    exactly 1: a closed memory neither leaks nor drifts, and float32 runtimes agree with
    the float64 cell equations over long streams. (Measured on the way here: gates at 16,
    a 1.1e-7 leak per step that float32 rounds differently, and gates built from a
    24-harmonic Fourier series of the one-hot, whose float32 sum loses ~1e-5, both put
    onnxruntime 1-3e-5 away from the float64 reference after 200 steps.)
    """
    steps = model.steps_per_day
    H = model.hidden_size
    if not model.pre.hour_onehot or not model.residual or steps + 1 > H:
        raise ValueError(f"a daily memory needs the one-hot hour, a residual head and hidden_size > {steps}")
    hour_col = 1  # input column of half hour 0; half hour s is column 1 + s
    lstm = model.lstm
    w_ih, w_hh = lstm.weight_ih_l0.data, lstm.weight_hh_l0.data
    b_ih, b_hh = lstm.bias_ih_l0.data, lstm.bias_hh_l0.data
    i_, f_, g_, o_ = (slice(n * H, (n + 1) * H) for n in range(4))
    logit = math.log
    prev = steps
    for j in range(steps):
        write = hour_col + (j + 1) % steps
        read = hour_col + j
        for block in (i_, f_, g_, o_):
            w_ih[block][j] = 0.0
            w_hh[block][j] = 0.0
            b_ih[block][j] = 0.0
            b_hh[block][j] = 0.0
        # input gate: -gate elsewhere, logit(1 - decay) at the write slot
        w_ih[i_][j, write] = logit((1 - decay) / decay) + gate
        b_ih[i_][j] = -gate
        # forget gate: +gate elsewhere, logit(decay) at the write slot
        w_ih[f_][j, write] = logit(decay / (1 - decay)) - gate
        b_ih[f_][j] = gate
        # candidate: the change since the previous reading
        w_ih[g_][j, 0] = write_scale
        w_hh[g_][j, prev] = -write_scale / prev_scale
        # output gate: open at the read slot
        w_ih[o_][j, read] = 2 * gate
        b_ih[o_][j] = -gate
    for block in (i_, f_, g_, o_):
        w_ih[block][prev] = 0.0
        w_hh[block][prev] = 0.0
        b_hh[block][prev] = 0.0
    b_ih[i_][prev], b_ih[f_][prev], b_ih[o_][prev] = gate, -gate, gate
    b_ih[g_][prev] = 0.0
    w_ih[g_][prev, 0] = prev_scale
    # other units do not read the memory units' raw values at first
    w_hh[:, : steps + 1] = torch.where(
        torch.arange(4 * H)[:, None] % H <= steps, w_hh[:, : steps + 1], torch.zeros_like(w_hh[:, : steps + 1])
    )
    # the head reads the memory as a change in the head's units
    head = model.head
    std, out_scale = float(model.pre.std), float(model.out_scale)
    head.weight.data[0, :steps] = std / (write_scale * out_scale)
    head.weight.data[0, steps] = 0.0


def init_weekly_memory(model: Forecaster, decay: float = 0.7, gate: float = 24.0, write_scale: float = 0.5) -> None:
    """Units 49..384 of layer 0: a memory, by half hour of the week, of what the daily memory missed.

    Unit ``49 + 48 d + j`` belongs to the forecast made on day ``d`` at half hour ``j``: at the
    next half hour it mixes in (weight ``1 - decay``) the change just seen minus the daily
    memory's forecast of it (read from the daily memory unit that was open one step earlier),
    and a week later, at (d, j), its output gate opens: the head adds it to the daily memory's
    forecast. Each gate opens only when the half hour *and* the day (both one-hot inputs, exact
    0 or 1 in any precision) are right, a linear threshold at ±``gate``: an ordinary LSTM
    cell. Taylor's double seasonal method has the same two seasons: a daily shape that adapts
    from day to day and a weekly correction that adapts from week to week. Needs
    :func:`init_daily_memory` first; the head starts reading both memories at their scale and
    the other units not at all.
    """
    steps, H = model.steps_per_day, model.hidden_size
    daily, weekly = daily_units(steps), weekly_units(steps)
    if daily + weekly > H or not model.pre.day_onehot:
        raise ValueError(f"a weekly memory needs hidden_size >= {daily + weekly} and the one-hot day")
    hour_col, day_col = 1, 1 + steps
    prev = steps
    lstm = model.lstm
    w_ih, w_hh = lstm.weight_ih_l0.data, lstm.weight_hh_l0.data
    b_ih, b_hh = lstm.bias_ih_l0.data, lstm.bias_hh_l0.data
    i_, f_, g_, o_ = (slice(n * H, (n + 1) * H) for n in range(4))
    # the daily memory's candidate reads write_scale · z_t + w_prev · h_prev (the change): reuse its weights
    w_z = float(w_ih[g_][0, 0])
    w_prev = float(w_hh[g_][0, prev])
    logit = math.log

    def gate_at(block: slice, u: int, slot: int, day: int, both: float, one: float) -> None:
        """Pre-activation ``both`` when half hour == slot and day == day, ``one`` when only one is, beyond when neither."""
        a = both - one  # a·[slot] + a·[day] + b: both -> 2a + b, one -> a + b, none -> b
        w_ih[block][u, hour_col + slot] = a
        w_ih[block][u, day_col + day] = a
        b_ih[block][u] = one - a

    for d in range(7):
        for j in range(steps):
            u = daily + steps * d + j
            for block in (i_, f_, g_, o_):
                w_ih[block][u] = 0.0
                w_hh[block][u] = 0.0
                b_ih[block][u] = 0.0
                b_hh[block][u] = 0.0
            write_slot, write_day = (j + 1) % steps, (d + (j + 1) // steps) % 7
            gate_at(i_, u, write_slot, write_day, logit((1 - decay) / decay), -gate)
            gate_at(f_, u, write_slot, write_day, logit(decay / (1 - decay)), gate)
            gate_at(o_, u, j, d, gate, -gate)
            # candidate: the change just seen minus the daily memory's forecast of it
            w_ih[g_][u, 0] = w_z
            w_hh[g_][u, prev] = w_prev
            # the open daily memory unit holds tanh(C) ≈ C, the mean of tanh(write_scale · change)
            w_hh[g_][u, :steps] = -1.0
    lo, hi = daily, daily + weekly
    rows = torch.arange(4 * H)[:, None] % H
    w_hh[:, lo:hi] = torch.where((rows >= lo) & (rows < hi), w_hh[:, lo:hi], torch.zeros_like(w_hh[:, lo:hi]))
    head = model.head
    std, out_scale = float(model.pre.std), float(model.out_scale)
    head.weight.data[0, lo:hi] = std / (write_scale * out_scale)
    # the forecast starts as the two memories' alone: the other units enter the head as they learn
    head.weight.data[0, hi:] = 0.0
    head.bias.data.zero_()


def freeze_daily_memory(model: Forecaster, units: int = DAILY_UNITS) -> None:
    """Keep the first ``units`` hidden units as built: zero their rows' gradients.

    ``units`` = 49 for :func:`init_daily_memory`, 49 + 336 with :func:`init_weekly_memory`.
    The memory's weights are exact to ~1e-2 of a gate's range (the previous reading is held at
    2⁻⁷ scale); the first Adam steps, which move every weight by about the learning rate,
    would otherwise wipe it out. The rest of the layer, and the head that reads the memory,
    train as usual.
    """
    H = model.hidden_size
    rows = (torch.arange(4 * H) % H) < units  # the memory units and the previous-reading unit
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        param = getattr(model.lstm, name)
        mask = (~rows).to(param.dtype).reshape(-1, *([1] * (param.dim() - 1)))
        param.register_hook(lambda grad, mask=mask: grad * mask)
