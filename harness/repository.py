"""Model repositories for hot-reload tests: copies of the default model under new names and
versions, added the way an operator should (built beside the repository, then renamed in, so
a watching server never sees a half-copied version)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.paths import DEFAULT_MODEL

FILES = ("model.json", "model.onnx")


def add_version(repo: Path, name: str, version: int, **card_changes: object) -> Path:
    """``repo/name/version``: the default model, its card's name and version set to match,
    with ``card_changes`` applied to ``model.json`` (to make a version that fails its checks)."""
    staging = repo / f".staging-{name}-{version}"
    staging.mkdir(parents=True)
    for f in FILES:
        shutil.copyfile(DEFAULT_MODEL / f, staging / f)
    card = json.loads((staging / "model.json").read_text())
    card |= {"name": name, "version": str(version), **card_changes}
    (staging / "model.json").write_text(json.dumps(card))
    target = repo / name / str(version)
    target.parent.mkdir(exist_ok=True)
    staging.rename(target)
    return target
