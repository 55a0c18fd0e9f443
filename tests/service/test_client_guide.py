"""The Python examples of docs/clients.md run as written against a live server, and print
what the guide shows under each of them.

Each example is followed in the guide by an "Output:" block. Words must match exactly and
numbers to 4 significant digits (the printed forecasts; a retrained model changes them, and
the guide with it: ``python -m tests.service.test_client_guide`` rewrites the blocks from a
live server).

The guide's server runs in explicit model control mode over a copy of the repository (the
model-lifecycle example adds and removes a version): ``REPO = Path("models")`` in an example
is pointed at that copy, as ``URL`` is pointed at the server.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.repository import add_version
from harness.server import running_server
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

GUIDE = ROOT / "docs" / "clients.md"
EXAMPLE = re.compile(r"```python\n((?:(?!```).)*)```\n\nOutput:\n\n```text\n((?:(?!```).)*)```", re.S)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def examples(text: str | None = None) -> list[tuple[str, str]]:
    """(code, shown output) of the guide's examples, but those of lstm_serving_client
    (run by tests/client/test_docs_examples.py)."""
    text = GUIDE.read_text() if text is None else text
    return [(c, o) for c, o in EXAMPLE.findall(text) if "lstm_serving_client" not in c]


@contextmanager
def guide_server() -> Iterator[tuple[str, str, Path]]:
    """A server as the guide's examples expect it, and its (copied) model repository."""
    with tempfile.TemporaryDirectory(prefix="guide-models-") as d:
        repo = Path(d)
        add_version(repo, "demand", 1)
        with running_server({"LSTM_MODEL_CONTROL_MODE": "explicit"}, repo=repo) as server:
            yield server.url, server.grpc, repo


@pytest.fixture(scope="module")
def guide() -> Iterator[tuple[str, str, Path]]:
    with guide_server() as s:
        yield s


def run(code: str, url: str, grpc_url: str, repo: Path) -> str:
    code = code.replace('GRPC_URL = "localhost:8001"', f'GRPC_URL = "{grpc_url}"')
    code = code.replace('URL = "localhost:8000"', f'URL = "{url.removeprefix("http://")}"')
    code = code.replace('REPO = Path("models")', f"REPO = Path({str(repo)!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def same(got: str, shown: str) -> bool:
    """Equal words (numpy's column padding aside); numbers equal to 2e-6 relative: float32's
    printing and a few ulps of onnxruntime across CPUs, far below any change of the model."""
    if " ".join(NUMBER.sub("#", got.strip()).split()) != " ".join(NUMBER.sub("#", shown.strip()).split()):
        return False
    for a, b in zip(NUMBER.findall(got), NUMBER.findall(shown), strict=True):
        x, y = float(a), float(b)
        if abs(x - y) > 2e-6 * max(abs(x), abs(y), 1.0):
            return False
    return True


def test_the_guide_has_examples_with_their_output():
    text = GUIDE.read_text()
    plain = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "lstm_serving_client" not in b]
    assert len(examples()) >= 2
    assert len(examples()) == len(plain), "every example shows its output under it"


@pytest.mark.parametrize("index", range(len(examples())))
def test_example_prints_what_the_guide_shows(guide, index):
    code, shown = examples()[index]
    got = run(code, *guide)
    assert same(got, shown), f"the guide shows:\n{shown}\nthe example printed:\n{got}"


def test_the_comparison_can_fail():
    assert same("0 31156.08\nok", "0 31156.1\nok")
    assert not same("0 31156.08", "0 31200.0")
    assert not same("0 31156.08 MW", "0 31156.08 GW")


def update() -> None:
    """Rewrite each example's Output block from a live server."""
    text = GUIDE.read_text()
    with guide_server() as (url, grpc_url, repo):

        def fill(m: re.Match) -> str:
            code = m.group(1)
            if "lstm_serving_client" in code:
                return m.group(0)
            return f"```python\n{code}```\n\nOutput:\n\n```text\n{run(code, url, grpc_url, repo)}```"

        text = EXAMPLE.sub(fill, text)
    GUIDE.write_text(text)


if __name__ == "__main__":
    update()
