"""The held-out readings a model's console demo streams: ``<version dir>/heldout.json``.

The test split's inputs, preceded by a warm-up week from the validation split (the card's
test metrics come from a stream that had seen the history, so the demo's stream should
too). ``actual_next[i]`` is the reading that ``readings[i]``'s forecast is for. Small (about
25 KB): the service serves it as it is and needs no dataset package at runtime.

Run after exporting a model: ``python -m export.heldout models/demand/1``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from export.data import STEPS_PER_WEEK, Series, load

FILE = "heldout.json"


def heldout(series: Series, warmup: int = STEPS_PER_WEEK) -> dict:
    test_start, test_end = series.split()["test"]  # indices of target readings
    first = test_start - 1 - warmup  # input of the first warm-up forecast
    readings = series.features[first : test_end - 1]
    return {
        "format": "lstm-heldout/1",
        "dataset": series.name,
        "source": series.source,
        "split": "test",
        "warmup": warmup,
        "first_index": first,
        "note": f"inputs {first}..{test_end - 2}; the first {warmup} forecasts warm the state up (validation split)",
        "readings": [[round(float(v), 4) for v in row] for row in readings],
        "actual_next": [round(float(v), 4) for v in series.values[first + 1 : test_end]],
    }


def write(version_dir: Path) -> Path:
    card = json.loads((version_dir / "model.json").read_text())
    path = version_dir / FILE
    path.write_text(json.dumps(heldout(load(card["dataset"]["name"])), separators=(",", ":")) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("version_dir", type=Path)
    print(write(p.parse_args(argv).version_dir))


if __name__ == "__main__":
    main()
