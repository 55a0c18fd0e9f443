"""The README lists every setting, and the make targets it names exist."""

from __future__ import annotations

from service.config import Settings, settings_table
from tests.conftest import ROOT


def test_readme_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [f"LSTM_{n.upper()}" for n in Settings.model_fields if f"`LSTM_{n.upper()}`" not in readme]
    assert not missing, f"README does not document {missing}"
    assert settings_table() in readme, "README's settings table is stale: python -m service.config prints it"


def test_readme_starts_with_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:10])
    assert "make serve" in head and "make test" in head
    makefile = (ROOT / "Makefile").read_text()
    assert "\nserve:" in makefile and "\ntest:" in makefile
