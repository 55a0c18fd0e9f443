"""The client installs alone (httpx and websockets only, no numpy), typed; the service's
package data carries the console's files and the vendored chart library with its licence."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def build_wheel(source: Path, out: Path) -> zipfile.ZipFile:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def test_client_wheel_depends_on_httpx_and_websockets_only(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "client", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    wheel = build_wheel(src, tmp_path / "dist")
    names = wheel.namelist()
    assert "lstm_serving_client/py.typed" in names and "lstm_serving_client/sync.py" in names
    (meta,) = [n for n in names if n.endswith("METADATA")]
    requires = [
        line.split(":", 1)[1].strip()
        for line in wheel.read(meta).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    assert sorted(r.split(">")[0].split("=")[0].strip() for r in requires) == ["httpx", "websockets"]


def test_client_imports_and_encodes_without_numpy():
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import lstm_serving_client as c\n"
        "from lstm_serving_client._common import as_rows\n"
        "assert 'numpy' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(as_rows([[1, 2, 3]]), c.Client, c.AsyncClient)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(ROOT / "client")},
    )
    assert out.returncode == 0, out.stderr


def test_service_package_data_covers_every_console_file():
    """What pyproject's package-data globs select is what the wheel ships (building it takes 10 s)."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    shipped = {p for g in globs for p in (ROOT / "service").glob(g) if p.is_file()}
    console = {p for p in (ROOT / "service" / "console").rglob("*") if p.is_file()}
    assert console and console <= shipped, sorted(str(p) for p in console - shipped)
    assert (ROOT / "service" / "console" / "vendor" / "uPlot.LICENSE") in shipped
