"""The model repository on disk: ``<root>/<name>/<version>/model.onnx`` + ``model.json``."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ModelLoadError

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# the recurrent cells served, and the state each keeps per layer: the tensors in (``<s>0``) and
# out (``<s>n``) of the graph, in this order, are the state the sessions keep
CELL_STATES = {"lstm": ("h", "c"), "gru": ("h",)}


@dataclass(frozen=True)
class ModelCard:
    """What ``model.json`` says, with the fields the service relies on checked."""

    name: str
    version: str
    path: Path  # the version directory
    sha256: str
    num_layers: int
    hidden_size: int
    n_features: int
    n_outputs: int
    lengths_input: str | None
    raw: dict[str, Any]
    session_ttl_s: float | None = None  # how long an idle stream's state stays worth keeping
    feature_names: tuple[str, ...] = ()
    feature_units: tuple[str, ...] = ()
    # each feature's valid [min, max] from the card (None: the card gives none, as old cards)
    feature_ranges: tuple[tuple[float, float] | None, ...] = ()
    # each feature's grid step: valid values are min + k * step (None: any value in range)
    feature_steps: tuple[float | None, ...] = ()
    cell: str = "lstm"  # a key of CELL_STATES

    @cached_property
    def states(self) -> tuple[str, ...]:
        """The state's parts, in the order of the state array's first axis: ``h, c`` or ``h``."""
        return CELL_STATES[self.cell]

    @cached_property
    def state_inputs(self) -> tuple[str, ...]:
        return tuple(f"{s}0" for s in self.states)

    @cached_property
    def state_outputs(self) -> tuple[str, ...]:
        return tuple(f"{s}n" for s in self.states)

    @cached_property
    def grids(self) -> tuple[tuple[int, float, float], ...]:
        """``(feature, origin, step)`` of every feature whose card declares a grid."""
        return tuple(
            (i, r[0] if r else 0.0, s)
            for i, (s, r) in enumerate(zip(self.feature_steps, self.feature_ranges, strict=False))
            if s
        )

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature lower and upper bounds as float32 arrays; a feature without a range is
        bounded by the largest finite float32, so that one test also refuses NaN and infinities."""
        big = float(np.finfo(np.float32).max)
        lo = np.array([r[0] if r else -big for r in self.feature_ranges] or [-big], np.float32)
        hi = np.array([r[1] if r else big for r in self.feature_ranges] or [big], np.float32)
        return lo, hi

    @cached_property
    def bound_lists(self) -> tuple[list[float], list[float]]:
        """:attr:`bounds` as Python floats (the same float32 values), for tests on a few values."""
        lo, hi = self.bounds
        return lo.tolist(), hi.tolist()

    @cached_property
    def input_names(self) -> frozenset[str]:
        """The inputs a request may name: ``x`` and the state inputs."""
        return frozenset(("x", *self.state_inputs))

    @cached_property
    def value_checks(self) -> tuple[tuple[float, float, float, float], ...]:
        """Per feature ``(low, high, grid origin, grid step)`` as Python floats (step 0: no grid),
        for the checks of a few values (:func:`service.core.inputs.small_ok`)."""
        los, his = self.bound_lists
        steps = {i: (o, s) for i, o, s in self.grids}
        return tuple((lo, hi, *steps.get(i, (0.0, 0.0))) for i, (lo, hi) in enumerate(zip(los, his, strict=True)))

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def onnx_path(self) -> Path:
        return self.path / str(self.raw.get("file", "model.onnx"))

    @property
    def state_bytes(self) -> int:
        return len(self.states) * self.num_layers * self.hidden_size * 4


def _positive_int(raw: dict[str, Any], field: str, where: Path) -> int:
    v = raw.get(field)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ModelLoadError(f"{where}: field {field!r} must be a positive integer, got {v!r}")
    return v


def _optional_positive(raw: dict[str, Any], field: str, where: Path) -> float | None:
    v = raw.get(field)
    if v is None:
        return None
    if not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v < math.inf:
        raise ModelLoadError(f"{where}: field {field!r} must be a positive number of seconds, got {v!r}")
    return float(v)


def _cell(raw: dict[str, Any], where: Path) -> str:
    cell = raw.get("cell", "lstm")
    if cell not in CELL_STATES:
        raise ModelLoadError(f"{where}: field 'cell' must be one of {sorted(CELL_STATES)}, got {cell!r}")
    return str(cell)


def _features(
    raw: dict[str, Any], n: int, where: Path
) -> tuple[tuple[str, ...], tuple[str, ...], tuple, tuple[float | None, ...]]:
    feats = raw.get("features")
    if not isinstance(feats, list) or len(feats) != n or not all(isinstance(f, dict) for f in feats):
        feats = [{"name": f"feature {i}"} for i in range(n)]
    ranges: list[tuple[float, float] | None] = []
    steps: list[float | None] = []
    for f in feats:
        step = f.get("step")
        if step is not None and (
            not isinstance(step, int | float) or isinstance(step, bool) or not 0 < step < math.inf
        ):
            raise ModelLoadError(f"{where}: feature {f.get('name')!r}: step must be a positive number, got {step!r}")
        steps.append(None if step is None else float(step))
        lo, hi = f.get("min"), f.get("max")
        if lo is None and hi is None:
            ranges.append(None)
            continue
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi)) or lo > hi:
            raise ModelLoadError(f"{where}: feature {f.get('name')!r} needs numbers min <= max, got {lo!r}, {hi!r}")
        ranges.append((float(lo), float(hi)))
    names = tuple(str(f.get("name", f"feature {i}")) for i, f in enumerate(feats))
    units = tuple(str(f.get("unit", "")) for f in feats)
    return names, units, tuple(ranges), tuple(steps)


def read_card(version_dir: Path) -> ModelCard:
    card_path = version_dir / "model.json"
    try:
        raw = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{card_path} is missing") from None
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{card_path} is not readable JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{card_path} must hold a JSON object")
    name, version = version_dir.parent.name, version_dir.name
    if raw.get("name", name) != name or str(raw.get("version", version)) != version:
        raise ModelLoadError(f"{card_path} says {raw.get('name')}/{raw.get('version')} but lies in {name}/{version}")
    card = ModelCard(
        name=name,
        version=version,
        path=version_dir,
        sha256=str(raw.get("sha256", "")),
        num_layers=_positive_int(raw, "num_layers", card_path),
        hidden_size=_positive_int(raw, "hidden_size", card_path),
        n_features=_positive_int(raw, "n_features", card_path),
        n_outputs=_positive_int(raw, "n_outputs", card_path),
        lengths_input=raw.get("lengths_input"),
        raw=raw,
        session_ttl_s=_optional_positive(raw, "session_ttl_s", card_path),
        cell=_cell(raw, card_path),
    )
    names, units, ranges, steps = _features(raw, card.n_features, card_path)
    card = replace(card, feature_names=names, feature_units=units, feature_ranges=ranges, feature_steps=steps)
    if not card.onnx_path.is_file():
        raise ModelLoadError(f"{card.onnx_path} is missing")
    actual = hashlib.sha256(card.onnx_path.read_bytes()).hexdigest()
    if card.sha256 != actual:
        raise ModelLoadError(f"{card.onnx_path}: sha256 {actual} does not match model.json ({card.sha256 or 'none'})")
    return card


def scan(root: Path) -> list[ModelCard]:
    """Every model version under ``root``; a repository with none, or a broken one, is an error."""
    if not root.is_dir():
        raise ModelLoadError(f"model repository {root} does not exist or is not a directory")
    cards = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not NAME_RE.match(model_dir.name):
            raise ModelLoadError(f"{model_dir}: model names may hold letters, digits, '_' and '-' only")
        versions = [p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        for v in sorted(versions, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0)):
            if not v.name.isdigit() or int(v.name) < 1:
                raise ModelLoadError(f"{v}: versions are positive integers")
            cards.append(read_card(v))
    if not cards:
        raise ModelLoadError(f"model repository {root} holds no model (expected <name>/<version>/model.json)")
    return cards


def listing(root: Path) -> dict[tuple[str, str], Path]:
    """Every ``(name, version)`` directory under ``root`` that looks like a model version,
    without reading or checking it (loading does that): what a running server compares with
    what it serves. Entries that are not model versions are left out, never an error."""
    found: dict[tuple[str, str], Path] = {}
    if not root.is_dir():
        return found
    for model_dir in root.iterdir():
        if not model_dir.is_dir() or not NAME_RE.match(model_dir.name):
            continue
        for v in model_dir.iterdir():
            if v.is_dir() and v.name.isdigit() and int(v.name) >= 1:
                found[(model_dir.name, v.name)] = v
    return found


def signature(version_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """The names, sizes and modification times of a version's files: a version that failed to
    load is tried again only once this changes (its files were being copied, or were fixed)."""
    return tuple(
        sorted((p.name, st.st_size, st.st_mtime_ns) for p in version_dir.iterdir() if p.is_file() for st in [p.stat()])
    )
