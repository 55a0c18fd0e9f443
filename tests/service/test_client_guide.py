"""The Python examples of docs/clients.md run as written against a live server."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def python_blocks() -> list[str]:
    text = (ROOT / "docs" / "clients.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_guide_has_examples():
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_example_runs(server, index):
    code = python_blocks()[index].replace('GRPC_URL = "localhost:8001"', f'GRPC_URL = "{server.grpc}"')
    code = code.replace('URL = "localhost:8000"', f'URL = "{server.url.removeprefix("http://")}"')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
