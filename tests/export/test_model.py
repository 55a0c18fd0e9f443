"""The forecaster's options: feature ranges in the card, seed ensembles merged into one LSTM."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export import reference as ref
from export.data import DEMAND_MAX_FACTOR, feature_ranges, load
from export.model import Forecaster, ensemble
from export.onnx_graph import build, initializers


def _members(k: int, **kw) -> list[Forecaster]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(
            Forecaster(
                hidden_size=6,
                num_layers=2,
                mean=30_000,
                std=4_000,
                hour_harmonics=3,
                day_harmonics=2,
                residual=True,
                out_scale=300.0,
                **kw,
            ).eval()
        )
    return out


def _inputs(rng: np.random.Generator, batch: int, seq: int) -> np.ndarray:
    return np.stack(
        [rng.uniform(2e4, 4e4, (batch, seq)), rng.integers(0, 48, (batch, seq)) / 2, rng.integers(0, 7, (batch, seq))],
        axis=-1,
    ).astype(np.float32)


def test_ensemble_is_the_mean_of_its_members_in_onnxruntime():
    members = _members(3)
    merged = ensemble(members)
    assert merged.hidden_size == 18 and merged.num_layers == 2
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(build(merged).SerializeToString(), opts)
    x = _inputs(np.random.default_rng(0), 4, 50)
    y, hn, cn = sess.run(None, {"x": x, "h0": np.zeros((2, 4, 18), np.float32), "c0": np.zeros((2, 4, 18), np.float32)})
    with torch.no_grad():
        outs = [m(torch.from_numpy(x), *m.zero_state(4)) for m in members]
    want_y = np.mean([o[0].numpy() for o in outs], axis=0)
    assert np.max(np.abs(y - want_y)) / 4_000 < 1e-5  # scaled units, as export.verify
    # the state is the members' states side by side, layer by layer
    for j, (_, h, c) in enumerate(outs):
        np.testing.assert_allclose(hn[:, :, 6 * j : 6 * (j + 1)], h.numpy(), atol=1e-5)
        np.testing.assert_allclose(cn[:, :, 6 * j : 6 * (j + 1)], c.numpy(), atol=1e-5)


def test_the_numpy_cell_equations_hold_for_an_ensemble():
    """An ensemble is a plain stacked LSTM: the reference reads it from the graph unchanged."""
    merged = ensemble(_members(2))
    r = ref.from_onnx(initializers(build(merged)), 2)
    rng = np.random.default_rng(1)
    x = _inputs(rng, 3, 20)
    h0 = rng.uniform(-1, 1, (2, 3, 12)).astype(np.float32)
    c0 = rng.normal(size=(2, 3, 12)).astype(np.float32)
    y, hn, cn = ref.run(r, x, h0, c0)
    with torch.no_grad():
        ty, th, tc = merged(*(torch.from_numpy(a) for a in (x, h0, c0)))
    assert np.max(np.abs(y - ty.numpy())) / 4_000 < 1e-5
    assert np.max(np.abs(hn - th.numpy())) < 1e-5 and np.max(np.abs(cn - tc.numpy())) < 1e-5


def test_ensemble_members_must_agree():
    a = _members(1)[0]
    torch.manual_seed(5)
    b = Forecaster(hidden_size=6, num_layers=2, mean=31_000, std=4_000, hour_harmonics=3, day_harmonics=2)
    with pytest.raises(ValueError, match="ensemble members"):
        ensemble([a, b])


def test_feature_ranges_come_from_the_data():
    series = load("taylor")
    ranges = {f["name"]: (f["min"], f["max"]) for f in feature_ranges(series)}
    assert ranges["hour_of_day"] == (0.0, 23.5)
    assert ranges["day_of_week"] == (0.0, 6.0)
    train_max = float(series.values[: series.train_end].max())
    assert ranges["demand"] == (0.0, pytest.approx(DEMAND_MAX_FACTOR * train_max, rel=1e-6))


def test_the_test_split_lies_inside_the_cards_ranges(default_model_dir):
    """The service refuses inputs outside the card's ranges: the model's own test data must pass."""
    card = json.loads((default_model_dir / "model.json").read_text())
    series = load("taylor")
    lo, hi = card["dataset"]["split"]["test"]
    assert [f["name"] for f in card["features"]] == ["demand", "hour_of_day", "day_of_week"]
    for j, f in enumerate(card["features"]):
        assert isinstance(f["min"], float) and isinstance(f["max"], float) and f["min"] < f["max"]
        column = series.features[lo:hi, j]
        assert f["min"] <= column.min() and column.max() <= f["max"], f["name"]
    # and so does the whole series the model was trained and validated on
    for j, f in enumerate(card["features"]):
        assert f["min"] <= series.features[:, j].min() and series.features[:, j].max() <= f["max"]


def test_one_hot_hour_marks_exactly_its_half_hour():
    from export.model import Preprocess

    pre = Preprocess(0.0, 1.0, day_harmonics=3, hour_onehot=True)
    hours = torch.arange(48, dtype=torch.float32)[:, None] / 2
    x = torch.cat([torch.zeros_like(hours), hours, torch.zeros_like(hours)], dim=1)
    feats = pre(x)
    assert feats.shape == (48, 1 + 48 + 6) and pre.n_out == 55
    np.testing.assert_array_equal(feats[:, 1:49].numpy(), np.eye(48))
    # off the half-hour grid no half hour is marked
    off = pre(torch.tensor([[0.0, 8.25, 0.0]]))
    assert float(off[0, 1:49].sum()) == 0.0


def _memory_model(hidden: int = 60) -> tuple[Forecaster, float]:
    from export.model import init_daily_memory

    series = load("taylor")
    train = series.values[: series.train_end]
    out_scale = float(np.diff(train).std())
    torch.manual_seed(0)
    model = Forecaster(
        hidden_size=hidden,
        num_layers=1,
        mean=float(train.mean()),
        std=float(train.std()),
        day_harmonics=3,
        residual=True,
        out_scale=out_scale,
        hour_onehot=True,
    )
    init_daily_memory(model, decay=0.7)
    return model.eval(), out_scale


def test_daily_memory_holds_the_weighted_mean_change_by_time_of_day():
    """What the memory units read out equals an exponentially weighted mean, computed in numpy,
    of the change into each half hour on previous days: to 3% of its size on average (tanh
    bends the largest changes a little)."""
    series = load("taylor")
    model, out_scale = _memory_model()
    with torch.no_grad():
        out, _ = model.lstm(model.pre(torch.from_numpy(series.features[None, :-1])), model.zero_state(1))
    read = out[0, :, :48].double().numpy() @ model.head.weight[0, :48].detach().double().numpy() * out_scale
    change = np.diff(series.values)  # change[t] = y[t+1] - y[t]: forecast at t
    memory, want = np.zeros(48), np.zeros(len(change))
    for t in range(len(change)):
        want[t] = memory[t % 48]
        memory[t % 48] = 0.7 * memory[t % 48] + 0.3 * change[t]
    err = np.abs(read - want)[336:]  # after the first week
    assert err.mean() < 0.03 * np.abs(want[336:]).mean()


def test_frozen_memory_keeps_its_weights_while_the_rest_trains():
    from export.model import freeze_daily_memory

    model, _ = _memory_model(hidden=56)
    freeze_daily_memory(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.from_numpy(load("taylor").features[None, :200])
    for _ in range(3):
        y, _, _ = model.forward_scaled(x, *model.zero_state(1))
        loss = (y**2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    rows = (torch.arange(4 * 56) % 56) <= 48
    for name in ("lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0"):
        after = model.state_dict()[name]
        assert torch.equal(after[rows], before[name][rows]), name
        assert not torch.equal(after[~rows], before[name][~rows]), name
    assert not torch.equal(model.head.weight, before["head.weight"])


def test_a_one_layer_model_exports():
    model, _ = _memory_model(hidden=52)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(build(model).SerializeToString(), opts)
    x = _inputs(np.random.default_rng(2), 2, 30)
    zeros = np.zeros((1, 2, 52), np.float32)
    y, hn, _ = sess.run(None, {"x": x, "h0": zeros, "c0": zeros})
    with torch.no_grad():
        ty, th, _ = model(torch.from_numpy(x), *model.zero_state(2))
    assert np.max(np.abs(y - ty.numpy())) / float(model.pre.std) < 1e-5
    assert np.max(np.abs(hn - th.numpy())) < 1e-5


def _two_memory_model() -> tuple[Forecaster, float]:
    from export.model import DAILY_UNITS, WEEKLY_UNITS, init_daily_memory, init_weekly_memory

    series = load("taylor")
    train = series.values[: series.train_end]
    out_scale = float(np.diff(train).std())
    torch.manual_seed(0)
    model = Forecaster(
        hidden_size=DAILY_UNITS + WEEKLY_UNITS + 3,
        num_layers=1,
        mean=float(train.mean()),
        std=float(train.std()),
        residual=True,
        out_scale=out_scale,
        hour_onehot=True,
        day_onehot=True,
        half_weights=True,
    )
    init_daily_memory(model, decay=0.7)
    init_weekly_memory(model, decay=0.7)
    model.round_weights_to_half()
    return model.eval(), out_scale


def test_weekly_memory_holds_what_the_daily_memory_missed_by_half_hour_of_the_week():
    """The weekly units' read-out equals the numpy analogue (a weighted mean, by half hour of the
    week, of the change minus the daily memory's forecast of it) to 5% of its size on average
    after three weeks; the untrained model's forecast is the analogue's to within 1%."""
    from export.analogues import _memory, _weekly_memory
    from export.model import DAILY_UNITS, WEEKLY_UNITS

    series = load("taylor")
    model, out_scale = _two_memory_model()
    with torch.no_grad():
        out, _ = model.lstm(model.pre(torch.from_numpy(series.features[None, :-1])), model.zero_state(1))
        y, _, _ = model(torch.from_numpy(series.features[None, :-1]), *model.zero_state(1))
    lo, hi = DAILY_UNITS, DAILY_UNITS + WEEKLY_UNITS
    w = model.head.weight[0].detach().double().numpy()
    read = out[0, :, lo:hi].double().numpy() @ w[lo:hi] * out_scale
    change = np.diff(series.values)
    daily = _memory(change, np.zeros(len(change), dtype=int), (0.7,))
    want = _weekly_memory(change - daily, 0.7)
    after = slice(3 * 336, None)
    assert np.abs(read - want)[after].mean() < 0.05 * np.abs(want[after]).mean()
    test = np.arange(series.val_end, series.n)
    got = np.abs(y[0, test - 1, 0].double().numpy() - series.values[test]).mean()
    analogue = np.abs(series.values[test - 1] + daily[test - 1] + want[test - 1] - series.values[test]).mean()
    assert abs(got - analogue) < 0.01 * analogue


def test_one_hot_day_and_float16_weights_export_exactly():
    """The graph stores the LSTM weights as float16 (half the bytes) and runs them as their
    exact float32 casts: onnxruntime = torch (whose weights hold the same float16 values)."""
    model, _ = _two_memory_model()
    proto = build(model)
    inits = {t.name: t for t in proto.graph.initializer}
    assert inits["lstm0.W"].data_type == inits["lstm0.R"].data_type == onnx_float16()
    days = torch.arange(7, dtype=torch.float32)[:, None]
    feats = model.pre(torch.cat([torch.zeros_like(days), torch.zeros_like(days), days], dim=1))
    np.testing.assert_array_equal(feats[:, 49:].numpy(), np.eye(7))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts)
    x = _inputs(np.random.default_rng(3), 2, 400)
    H = model.hidden_size
    zeros = np.zeros((1, 2, H), np.float32)
    y, hn, cn = sess.run(None, {"x": x, "h0": zeros, "c0": zeros})
    with torch.no_grad():
        ty, th, tc = model(torch.from_numpy(x), *model.zero_state(2))
    assert np.max(np.abs(y - ty.numpy())) / float(model.pre.std) < 1e-5
    assert np.max(np.abs(hn - th.numpy())) < 1e-5 and np.max(np.abs(cn - tc.numpy())) < 1e-5
    # the numpy reference reads the float16 initializers and the one-hot day from the graph
    r = ref.from_onnx(initializers(proto), 1)
    assert r.day_slots is not None and len(r.day_k) == 0
    want_y, want_h, _ = ref.run(r, x, zeros, zeros)
    assert np.max(np.abs(y - want_y)) / r.std < 1e-5 and np.max(np.abs(hn - want_h)) < 1e-5


def onnx_float16() -> int:
    import onnx

    return onnx.TensorProto.FLOAT16
