"""The client examples of README.md and docs/clients.md run as written against a live server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def client_blocks() -> list[tuple[str, str]]:
    found = []
    for doc in ("README.md", "docs/clients.md"):
        blocks = re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), re.S)
        found += [(doc, b) for b in blocks if "lstm_serving_client" in b]
    return found


def test_the_client_comes_first():
    """Right after make serve / make test in the README, and at the start of the client guide."""
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make test") < readme.index("from lstm_serving_client import") < readme.index("## ")
    guide = (ROOT / "docs" / "clients.md").read_text()
    assert guide.index("## lstm_serving_client") == guide.index("## ")
    assert len(client_blocks()) >= 3


@pytest.mark.parametrize(("doc", "code"), client_blocks(), ids=lambda v: v if v.endswith(".md") else "")
def test_example_runs(server, doc, code):
    code = code.replace("http://localhost:8000", server.url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "client"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, env=env)
    assert out.returncode == 0, f"{doc}:\n{out.stderr}"
    assert out.stdout.strip()
