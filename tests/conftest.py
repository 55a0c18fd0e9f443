from __future__ import annotations

from pathlib import Path

import pytest

from harness.paths import DEFAULT_MODEL, ROOT

__all__ = ["DEFAULT_MODEL", "ROOT"]


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    return DEFAULT_MODEL
