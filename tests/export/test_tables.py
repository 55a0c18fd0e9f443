"""The README and docs/model.md quote the card's test metrics as export/tables.py renders them."""

from __future__ import annotations

import json

from export.tables import DEFAULT_MODEL, metrics_table
from tests.conftest import ROOT


def test_the_docs_quote_the_cards_metrics_table():
    card = json.loads((DEFAULT_MODEL / "model.json").read_text())
    table, sentence = metrics_table(card).split("\n\n")
    for doc in ("README.md", "docs/model.md"):
        assert table in (ROOT / doc).read_text(), f"{doc}'s metrics table is stale: python -m export.tables"
    assert sentence in (ROOT / "README.md").read_text(), "README's summary of the table is stale"


def test_the_table_is_the_cards():
    card = json.loads((DEFAULT_MODEL / "model.json").read_text())
    card["metrics"]["test"]["model"]["mae"] = 1.0  # a changed card changes the table
    assert "| 1.0 |" in metrics_table(card)
