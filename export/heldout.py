"""The held-out readings a model's console demo streams: ``<version dir>/heldout.json``.

The test split's inputs, preceded by eight warm-up weeks from the training and validation
splits: the card's test metrics come from a stream that had seen the whole history, and the
model's weekly memory needs weeks of it (``--curve`` prints the test error by weeks of
history streamed first). ``actual_next[i]`` is the reading that ``readings[i]``'s forecast
is for. Small (about 90 KB): the service serves it as it is and needs no dataset package
at runtime.

Run after exporting a model: ``python -m export.heldout models/demand/1``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from export.data import Series, load, load_csv

FILE = "heldout.json"


WARMUP_WEEKS = 8


def series_of(card: dict) -> Series:
    """The series a model card was trained on: the named dataset, or its CSV file again."""
    d = card["dataset"]
    if "csv" in d:
        return load_csv(Path(d["csv"]), d["time_column"], d["target_column"], tuple(d.get("feature_columns", ())))
    return load(d["name"])


def heldout(series: Series, warmup: int | None = None) -> dict:
    """``warmup`` steps before the test split (default: eight weeks, or all there are)."""
    test_start, test_end = series.split()["test"]  # indices of target readings
    if warmup is None:
        warmup = min(WARMUP_WEEKS * series.steps_per_week, test_start - 1)
    first = test_start - 1 - warmup  # input of the first warm-up forecast
    readings = series.features[first : test_end - 1]
    return {
        "format": "lstm-heldout/1",
        "dataset": series.name,
        "source": series.source,
        "split": "test",
        "warmup": warmup,
        "first_index": first,
        "note": f"inputs {first}..{test_end - 2}; the first {warmup} forecasts warm the state up (training and "
        "validation splits)",
        "readings": [[round(float(v), 4) for v in row] for row in readings],
        "actual_next": [round(float(v), 4) for v in series.values[first + 1 : test_end]],
    }


def write(version_dir: Path, series: Series | None = None) -> Path:
    card = json.loads((version_dir / "model.json").read_text())
    path = version_dir / FILE
    path.write_text(json.dumps(heldout(series or series_of(card)), separators=(",", ":")) + "\n")
    return path


def curve(version_dir: Path, weeks: range = range(0, 9)) -> list[tuple[int, float]]:
    """Test MAE (MW) of the exported model streamed from a zero state over ``w`` weeks of
    history before the test split, for each ``w``: how long a new stream takes to forecast
    as well as the card says."""
    import numpy as np
    import onnxruntime as ort

    card = json.loads((version_dir / "model.json").read_text())
    series = series_of(card)
    sess = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    zero = np.zeros((card["num_layers"], 1, card["hidden_size"]), np.float32)
    out = []
    for w in weeks:
        d = heldout(series, w * series.steps_per_week)
        y = sess.run(["y"], {"x": np.asarray([d["readings"]], np.float32), "h0": zero, "c0": zero})[0][0, :, 0]
        k = d["warmup"]
        out.append((w, float(np.mean(np.abs(y[k:] - np.asarray(d["actual_next"][k:]))))))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("version_dir", type=Path)
    p.add_argument("--curve", action="store_true", help="print the test MAE by weeks of history streamed first")
    args = p.parse_args(argv)
    if args.curve:
        print("| weeks of history streamed first | test MAE (MW) |\n|---:|---:|")
        for w, mae in curve(args.version_dir):
            print(f"| {w} | {mae:.1f} |")
        return
    print(write(args.version_dir))


if __name__ == "__main__":
    main()
