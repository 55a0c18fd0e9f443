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


def dotted(node: ast.AST) -> list[str]:
    """``self.dp.sessions._locks`` as ``["self", "dp", "sessions", "_locks"]`` (empty if not a plain chain)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else []


def test_transports_use_no_private_name_of_the_data_plane():
    """Not ``dp._x``, ``self.dp.sessions._x``, nor the data plane's store or batchers."""
    bad = []
    for p in files("service/api"):
        for node in ast.walk(ast.parse(p.read_text())):
            chain = dotted(node)
            root = next((i for i, name in enumerate(chain) if name in ("dp", "dataplane")), None)
            if root is None:
                continue
            inside = chain[root + 1 :]
            if any(n.startswith("_") and not n.startswith("__") for n in inside) or any(
                n in ("store", "batcher", "_locks") for n in inside
            ):
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno} {'.'.join(chain)}")
    assert not bad, sorted(set(bad))


def test_the_protocol_layer_knows_no_transport():
    """``service/api/protocol`` serves REST, WebSocket and gRPC alike: it imports none of them,
    nor the web framework; gRPC imports nothing of HTTP."""
    transports = ("service.api.http", "service.api.grpc", "fastapi", "starlette", "grpc", "uvicorn")
    bad = [
        (str(p.relative_to(ROOT)), m)
        for p in files("service/api/protocol")
        for m in imports(p)
        if m.startswith(transports)
    ]
    bad += [
        (str(p.relative_to(ROOT)), m)
        for p in files("service/api/grpc")
        if "generated" not in p.parts
        for m in imports(p)
        if m.startswith("service.api.http")
    ]
    assert not bad, bad


def test_benchmarks_do_not_import_the_tests():
    bad = [
        (str(p.relative_to(ROOT)), m) for p in files("bench", "harness") for m in imports(p) if m.startswith("tests")
    ]
    assert not bad, bad
