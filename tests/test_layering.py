"""The package layering holds: lower layers import only leaves, transports use the data
plane's public face, and benchmarks never import the tests."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

LOWER = ("service/batching", "service/runtime", "service/sessions")


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def files(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in sorted((ROOT / d).rglob("*.py"))]


def test_lower_layers_never_import_the_data_plane():
    bad = [(str(p.relative_to(ROOT)), m) for p in files(*LOWER) for m in imports(p) if m.startswith("service.core")]
    assert not bad, f"batching, runtime and sessions import only leaves, not service.core: {bad}"


def test_transports_use_no_private_name_of_the_data_plane():
    bad = []
    for p in files("service/api"):
        for node in ast.walk(ast.parse(p.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in ("dp", "dataplane")
            ):
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "store"
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id in ("dp", "dataplane")
            ):
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno} reaches into the data plane's store")
    assert not bad, bad


def test_benchmarks_do_not_import_the_tests():
    bad = [
        (str(p.relative_to(ROOT)), m) for p in files("bench", "harness") for m in imports(p) if m.startswith("tests")
    ]
    assert not bad, bad
