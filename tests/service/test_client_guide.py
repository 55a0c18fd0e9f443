"""The Python examples of docs/clients.md run as written against a live server."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def python_blocks() -> list[str]:
    """The guide's examples but those of lstm_serving_client (run by tests/client/test_docs_examples.py)."""
    text = (ROOT / "docs" / "clients.md").read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "lstm_serving_client" not in b]


def test_the_guide_has_examples():
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_example_runs(server, index):
    code = python_blocks()[index].replace('URL = "localhost:8000"', f'URL = "{server.url.removeprefix("http://")}"')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
