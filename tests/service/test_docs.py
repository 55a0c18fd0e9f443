"""The README lists every setting, and the make targets it names exist."""

from __future__ import annotations

from service.config import Settings, settings_table
from tests.conftest import ROOT


def test_readme_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [f"LSTM_{n.upper()}" for n in Settings.model_fields if f"`LSTM_{n.upper()}`" not in readme]
    assert not missing, f"README does not document {missing}"
    assert settings_table() in readme, "README's settings table is stale: python -m service.config prints it"


def test_readme_starts_with_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:10])
    assert "make serve" in head and "make test" in head
    makefile = (ROOT / "Makefile").read_text()
    assert "\nserve:" in makefile and "\ntest:" in makefile


def test_every_route_declares_its_path_parameters():
    """A generated client or a fuzzer can call every route from /openapi.json: each ``{name}``
    of a path is a declared path parameter (the hot routes, served below ASGI, included)."""
    import re

    from service.app import create_app

    doc = create_app(Settings(model_repository=ROOT / "models")).openapi()
    missing = []
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            if declared != names:
                missing.append((method, path, sorted(names - declared)))
    assert not missing, missing
    step = doc["paths"]["/v1/sessions/{session_id}/step"]["post"]
    assert "requestBody" in step and "200" in step["responses"]


def test_reliability_lists_every_bound_as_the_service_sets_it():
    from bench.reliability_report import bounds_table

    text = (ROOT / "docs" / "reliability.md").read_text()
    assert "\n".join(bounds_table()) in text, (
        "docs/reliability.md's bounds are stale: python -m bench.reliability_report"
    )


def test_the_sizing_table_is_the_measured_one():
    import json

    from bench.memory import RESULTS, table

    text = (ROOT / "docs" / "deployment.md").read_text()
    assert "\n".join(table(json.loads(RESULTS.read_text()))) in text, "stale: python -m bench.memory --render"


def test_the_layer_section_is_the_measured_one():
    """docs/performance.md's layer section is what ``python -m bench.layers --render`` writes from
    the saved run (concurrency 1 included)."""
    import json

    from bench.layers import END, section

    data = json.loads((ROOT / "docs" / "bench" / "layers.json").read_text())
    text = (ROOT / "docs" / "performance.md").read_text()
    rendered = "\n".join(section(data))
    assert rendered.endswith(END) and "One stream, one request at a time" in rendered
    assert rendered in text, "stale: python -m bench.layers --render"


def test_the_peer_section_is_the_measured_one():
    """docs/benchmarks.md's peer section, its targets with the lean prototype's figures
    included, is what ``python -m bench.peers --render`` writes from the saved run."""
    import json

    from bench.peers import LEAN, section

    data = json.loads((ROOT / "docs" / "bench" / "results-peers.json").read_text())
    assert any(r["peer"] == LEAN for r in data["results"]), "the saved run has no lean prototype: make bench-peers"
    rendered = "\n".join(section(data))
    assert "the lean prototype, same point" in rendered
    assert rendered in (ROOT / "docs" / "benchmarks.md").read_text(), "stale: python -m bench.peers --render"
