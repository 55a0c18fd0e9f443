"""Training CLI: configuration errors, a short real run, and the committed default model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from export.baselines import NAMES as BASELINE_NAMES
from export.data import load
from export.package import sha256
from tests.conftest import ROOT


def _run(*args: str):
    return subprocess.run(
        [sys.executable, "-m", "export.train", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--hidden", "0"], "--hidden must be positive"),
        (["--layers", "-1"], "--layers must be positive"),
        (["--version", "v1"], "--version must be a positive integer"),
        (["--daily-memory", "1.5"], "--daily-memory must lie in (0, 1)"),
        (["--hidden", "32"], "--daily-memory needs --residual, --hour-encoding onehot and --hidden > 48"),
        (["--hour-encoding", "harmonics"], "--daily-memory needs"),
        (["--no-residual"], "--daily-memory needs --residual"),
        (["--weekly-memory", "1.5"], "--weekly-memory must lie in (0, 1)"),
        (["--hidden", "300"], "--weekly-memory needs --daily-memory, --hidden >= 385"),
        (["--day-encoding", "harmonics"], "--weekly-memory needs"),
        (["--refit-epochs", "0"], "--refit-epochs must be positive"),
    ],
)
def test_bad_configuration_is_a_message(args, message, tmp_path):
    out = _run(*args, "--models", str(tmp_path))
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_split_is_chronological_and_scaling_uses_train_only(default_model_dir):
    series = load("taylor")
    split = series.split()
    assert split["train"][1] == split["validation"][0] and split["validation"][1] == split["test"][0]
    assert split["test"][1] == series.n
    card = json.loads((default_model_dir / "model.json").read_text())
    assert card["dataset"]["split"] == split
    import onnx
    from onnx import numpy_helper

    inits = {
        t.name: numpy_helper.to_array(t) for t in onnx.load(str(default_model_dir / "model.onnx")).graph.initializer
    }
    train = series.values[: series.train_end]
    assert float(inits["scale.mean"]) == pytest.approx(train.mean(), rel=1e-6)
    assert float(inits["scale.std"]) == pytest.approx(train.std(), rel=1e-6)


def test_short_training_run_writes_a_complete_model(tmp_path):
    args = ["--epochs", "2", "--hidden", "52", "--weekly-memory", "0", "--ensemble", "2", "--no-plots"]
    out = _run("--models", str(tmp_path), *args)
    assert out.returncode == 0, out.stderr
    d = tmp_path / "demand" / "1"
    card = json.loads((d / "model.json").read_text())
    assert card["sha256"] == sha256(d / "model.onnx")
    assert card["hidden_size"] == 2 * 52 and card["training"]["epochs_run"] == 2 * 2
    assert [m["seed"] for m in card["training"]["members"]] == [0, 1]
    assert set(card["metrics"]["test"]) == {"model", *BASELINE_NAMES}


def test_default_model_beats_baselines_and_is_complete(default_model_dir):
    card = json.loads((default_model_dir / "model.json").read_text())
    assert card["sha256"] == sha256(default_model_dir / "model.onnx")
    assert (default_model_dir / "model.onnx").stat().st_size < 2_000_000
    for plot in ("loss.png", "forecast.png"):
        assert (default_model_dir / plot).stat().st_size > 10_000
    m = card["metrics"]["test"]
    for baseline in ("persistence", "seasonal_naive_weekly", "seasonal_naive_daily"):
        # a clear margin: at least 20% lower error than each baseline
        assert m["model"]["mae"] < 0.8 * m[baseline]["mae"], baseline
        assert m["model"]["rmse"] < 0.8 * m[baseline]["rmse"], baseline
    # and every single-season Holt-Winters by the margin the README states (about 46%)
    for baseline in (
        "holt_winters_daily",
        "holt_winters_weekly",
        "holt_winters_daily_trend",
        "holt_winters_weekly_trend",
    ):
        assert m["model"]["mae"] < 0.6 * m[baseline]["mae"], baseline


def test_default_model_metrics_are_what_the_model_computes(default_model_dir):
    """The card's model MAE is recomputed from the committed ONNX file, not trusted."""
    from export.train import evaluate

    series = load("taylor")
    metrics, forecast = evaluate(default_model_dir / "model.onnx", series)
    card = json.loads((default_model_dir / "model.json").read_text())
    assert metrics["model"]["mae"] == pytest.approx(card["metrics"]["test"]["model"]["mae"], rel=1e-6)
    assert np.isfinite(forecast).all()
