"""The test-metrics table of a model card, as the README and ``docs/model.md`` show it.

``python -m export.tables [MODEL_DIR]`` prints it (default: the bundled model); the docs
quote it verbatim and ``tests/export/test_tables.py`` checks that they still do, so no
figure in them is typed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from export.baselines import NAMES

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "demand" / "1"
SINGLE_SEASON = [n for n in NAMES if n.startswith("holt_winters")]


def model_label(card: dict[str, Any]) -> str:
    layers, hidden = card["num_layers"], card["hidden_size"]
    return f"LSTM ({layers} layer{'s' if layers > 1 else ''} × {hidden}, daily + weekly memory)"


def metrics_table(card: dict[str, Any]) -> str:
    """The Markdown table of the card's test metrics, best first, and one sentence on what
    the model gains over the best baseline and over the single-season Holt-Winters ones."""
    m = card["metrics"]["test"]
    rows = sorted(NAMES, key=lambda n: m[n]["mae"])
    lines = ["| forecast | MAE (MW) | RMSE (MW) |", "|---|---:|---:|"]
    lines.append(f"| **{model_label(card)}** | {m['model']['mae']:.1f} | {m['model']['rmse']:.1f} |")
    lines += [f"| {NAMES[n]} | {m[n]['mae']:.1f} | {m[n]['rmse']:.1f} |" for n in rows]
    best = rows[0]
    gain = [100 * (1 - m["model"]["mae"] / m[n]["mae"]) for n in SINGLE_SEASON]
    sentence = (
        f"On MAE the model is {100 * (1 - m['model']['mae'] / m[best]['mae']):.0f} % better than the best "
        f"baseline ({NAMES[best]}) and {min(gain):.0f}–{max(gain):.0f} % better than the single-season "
        "Holt-Winters forecasters."
    )
    if "mae_ci95" in m["model"]:  # 95% intervals, block bootstrap by day (export/intervals.py)
        lo, hi = m["model"]["mae_ci95"]
        vs = m["model"]["mae_minus_best_baseline"]
        sentence += (
            f" 95% intervals (a block bootstrap by day over the 14 test days): the model's MAE {lo:.1f}–{hi:.1f} MW; "
            f"its difference with the best baseline {vs['mae']:+.1f} MW ({vs['ci95'][0]:+.1f} to {vs['ci95'][1]:+.1f})."
        )
    lines += ["", sentence]
    return "\n".join(lines)


def main() -> None:
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL
    print(metrics_table(json.loads((model_dir / "model.json").read_text())))


if __name__ == "__main__":
    main()
