from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "demand" / "1"


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    return DEFAULT_MODEL
