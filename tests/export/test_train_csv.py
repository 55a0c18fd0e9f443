"""``python -m export.train --csv``: a user's own series, written by the test as a CSV file --
trained, exported with its card, baselines, plots and held-out data, served, and streamed
exactly; and every malformed file refused with exit 2 and the rows named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from export.baselines import NAMES as BASELINE_NAMES
from export.package import sha256
from harness.server import running_server
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

WEEKS = 8


def write_series(path: Path, freq: str = "1h", weeks: int = WEEKS, seed: int = 0) -> pd.DataFrame:
    """A regular series with a daily and a weekly shape and noise, from a Monday."""
    per_day = int(pd.Timedelta("1D") / pd.Timedelta(freq))
    n = weeks * 7 * per_day
    t = pd.date_range("2024-03-04", periods=n, freq=freq)
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    load = 100 + 20 * np.sin(2 * np.pi * k / per_day) + 10 * (t.day_of_week >= 5) + rng.normal(0, 2, n)
    temp = 10 + 8 * np.sin(2 * np.pi * (k - 6) / per_day) + rng.normal(0, 1, n)  # known at each step
    load = load + 0.8 * temp
    frame = pd.DataFrame(
        {"when": t.strftime("%Y-%m-%d %H:%M"), "load_kw": load.round(3), "site": "a", "temp_c": temp.round(2)}
    )
    frame.to_csv(path, index=False)
    return frame


def train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "export.train", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("csv")
    write_series(tmp / "site.csv")
    repo = tmp / "repo"
    done = train("--csv", str(tmp / "site.csv"), "--time", "when", "--target", "load_kw")
    assert done.returncode == 2 and "--csv needs --name NAME" in done.stderr  # never over the default model
    done = train(
        "--csv", str(tmp / "site.csv"), "--time", "when", "--target", "load_kw",
        "--name", "site", "--models", str(repo), "--epochs", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, repo / "site" / "1"


def test_the_series_trains_into_a_complete_model(trained):
    tmp, d = trained
    card = json.loads((d / "model.json").read_text())
    assert card["sha256"] == sha256(d / "model.onnx")
    assert card["dataset"]["frequency"] == "60min" and card["dataset"]["length"] == WEEKS * 7 * 24
    week = 7 * 24
    n = WEEKS * week
    assert card["dataset"]["split"] == {"train": [0, n - 4 * week], "validation": [n - 4 * week, n - 2 * week],
                                        "test": [n - 2 * week, n]}  # fmt: skip
    assert [f["name"] for f in card["features"]] == ["load_kw", "hour_of_day", "day_of_week"]
    assert card["features"][1] == {**card["features"][1], "min": 0.0, "max": 23.0, "step": 1.0}
    assert card["outputs_meaning"][0]["name"] == "load_kw_next"
    assert card["hidden_size"] == 25 + 168 + 31  # the daily and weekly memories of hourly data, and 31 units
    assert set(card["metrics"]["test"]) == {"model", *BASELINE_NAMES}
    for f in ("forecast.png", "loss.png"):
        assert (d / f).stat().st_size > 10_000
    held = json.loads((d / "heldout.json").read_text())
    assert held["warmup"] == (WEEKS - 2) * week - 1 and len(held["readings"]) == held["warmup"] + 2 * week
    # the card's MAE is the exported model's, streamed over the whole series
    frame = pd.read_csv(tmp / "site.csv")
    values = frame["load_kw"].to_numpy(np.float64)
    hours = pd.to_datetime(frame["when"]).dt.hour.to_numpy(np.float64)
    days = pd.to_datetime(frame["when"]).dt.day_of_week.to_numpy(np.float64)
    x = np.stack([values, hours, days], axis=1).astype(np.float32)
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    z = np.zeros((1, 1, card["hidden_size"]), np.float32)
    y = sess.run(["y"], {"x": x[None, :-1], "h0": z, "c0": z})[0][0, :, 0]
    mae = float(np.mean(np.abs(y[n - 2 * week - 1 :] - values[n - 2 * week :])))
    assert mae == pytest.approx(card["metrics"]["test"]["model"]["mae"], rel=1e-6)
    verified = subprocess.run(
        [sys.executable, "-m", "export.verify", str(d)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert verified.returncode == 0 and "45 passed, 0 failed" in verified.stdout, verified.stdout[-2000:]


def test_the_trained_model_serves_and_streams_exactly(trained):
    _, d = trained
    held = json.loads((d / "heldout.json").read_text())
    x = np.asarray(held["readings"][:30], np.float32)
    card = json.loads((d / "model.json").read_text())
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    z = np.zeros((1, 1, card["hidden_size"]), np.float32)
    want = sess.run(["y"], {"x": x[None], "h0": z, "c0": z})[0][0]
    with running_server(repo=d.parent.parent) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        sid = c.post("/v1/sessions", json={"model": "site"}).json()["session_id"]
        got = []
        for a, b in ((0, 1), (1, 13), (13, 30)):
            r = c.post(f"/v1/sessions/{sid}/step", json={"inputs": x[a:b].tolist(), "expected_step": a})
            assert r.status_code == 200, r.text
            got += r.json()["outputs"]
        assert np.abs(np.asarray(got) - want).max() <= 1e-5 * np.abs(want).max()
        # the hour is read on the card's grid: an hourly model refuses half hours
        r = c.post(f"/v1/sessions/{sid}/step", json={"inputs": [[100.0, 8.5, 2.0]]})
        assert r.status_code == 400 and "hour_of_day must be a multiple of 1" in r.json()["error"], r.text


def _broken(frame: pd.DataFrame, how: str) -> pd.DataFrame:
    if how == "gap":
        return frame.drop(index=[500, 501, 900]).reset_index(drop=True)
    if how == "duplicate":
        return pd.concat([frame.iloc[:300], frame.iloc[299:]]).reset_index(drop=True)
    if how == "text":
        frame = frame.astype({"load_kw": object})
        frame.loc[40, "load_kw"] = "n/a"
        return frame
    if how == "time":
        frame = frame.copy()
        frame.loc[7, "when"] = "yesterday"
        return frame
    if how == "order":
        return pd.concat([frame.iloc[:100], frame.iloc[[101, 100]], frame.iloc[102:]]).reset_index(drop=True)
    if how == "short":
        return frame.iloc[: 6 * 7 * 24]
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how,message",
    [
        ("gap", "gaps (the series is every 60 min) at lines 502, 900"),  # the first row after each gap
        ("duplicate", "duplicate timestamps at line 302"),
        ("text", "load_kw: not a number at line 42"),
        ("time", "when: not a timestamp at line 9"),
        ("order", "timestamps earlier than the row before at line 103"),
        ("short", "at least 7 weeks"),
        ("column", "no column 'load'; the columns are ['when', 'load_kw', 'site', 'temp_c']"),
        ("frequency", "readings every 420 s; the frequency must be a whole number of minutes that divides a day"),
    ],
)
def test_a_malformed_series_is_refused_with_its_rows(tmp_path: Path, how: str, message: str):
    path = tmp_path / "s.csv"
    if how == "frequency":
        write_series(path, freq="7min", weeks=1)
    else:
        frame = write_series(path)
        if how != "column":
            _broken(frame, how).to_csv(path, index=False)
    target = "load" if how == "column" else "load_kw"
    done = train(
        "--csv", str(path), "--time", "when", "--target", target, "--name", "s", "--models", str(tmp_path / "repo")
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "repo").exists()


def test_extra_columns_are_features_the_model_reads(tmp_path: Path):
    """``--features temp_c``: a fourth input after the calendar, scaled by its training
    statistics in the graph, bounded by the card, verified, served and streamed exactly."""
    write_series(tmp_path / "site.csv")
    done = train(
        "--csv", str(tmp_path / "site.csv"), "--time", "when", "--target", "load_kw", "--features", "temp_c",
        "--name", "warm", "--models", str(tmp_path / "repo"), "--epochs", "2", "--no-plots",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    d = tmp_path / "repo" / "warm" / "1"
    card = json.loads((d / "model.json").read_text())
    assert card["n_features"] == 4 and card["dataset"]["feature_columns"] == ["temp_c"]
    temp = card["features"][3]
    assert temp["name"] == "temp_c" and temp["min"] < 0 < 20 < temp["max"]
    verified = subprocess.run(
        [sys.executable, "-m", "export.verify", str(d)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert verified.returncode == 0 and "45 passed, 0 failed" in verified.stdout, verified.stdout[-2000:]
    held = json.loads((d / "heldout.json").read_text())
    x = np.asarray(held["readings"][:20], np.float32)
    assert x.shape == (20, 4)
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    z = np.zeros((1, 1, card["hidden_size"]), np.float32)
    want = sess.run(["y"], {"x": x[None], "h0": z, "c0": z})[0][0]
    # the temperature moves the forecast: the model reads it
    hot = x.copy()
    hot[:, 3] += 5
    assert np.abs(sess.run(["y"], {"x": hot[None], "h0": z, "c0": z})[0][0] - want).max() > 1e-3
    with running_server(repo=d.parent.parent) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        sid = c.post("/v1/sessions", json={"model": "warm"}).json()["session_id"]
        got = []
        for a, b in ((0, 7), (7, 20)):
            r = c.post(f"/v1/sessions/{sid}/step", json={"inputs": x[a:b].tolist(), "expected_step": a})
            assert r.status_code == 200, r.text
            got += r.json()["outputs"]
        assert np.abs(np.asarray(got) - want).max() <= 1e-5 * np.abs(want).max()
        r = c.post(f"/v1/sessions/{sid}/step", json={"inputs": [[100.0, 8.0, 2.0, temp["max"] + 100]]})
        assert r.status_code == 400 and "temp_c" in r.json()["error"], r.text
