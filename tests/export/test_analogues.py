"""The numpy analogues docs/model.md quotes are what ``python -m export.analogues`` computes."""

from __future__ import annotations

from export.analogues import analogues
from export.data import load
from tests.conftest import ROOT


def test_docs_quote_the_analogues():
    docs = (ROOT / "docs" / "model.md").read_text()
    values = analogues(load("taylor"))
    assert len(values) == 8
    for name, mae in values.items():
        assert f"| {mae:.1f} |" in docs, (name, mae)
    # the memory is what matters: with a fixed correction it is twice as good as the calendar alone
    assert values["daily memory + fixed correction"] < 0.55 * values["fixed mean change by (day of week, half hour)"]
    # and the weekly memory of its misses, nothing fitted, beats every fixed correction
    assert values["daily memory + weekly memory of what it missed"] < min(
        values["daily memory + fixed correction"], values["three daily memories + fixed correction"]
    )
