"""``export.verify`` passes on the committed model and fails on a broken one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from export import verify
from tests.conftest import ROOT


def test_every_check_passes_on_default_model(default_model_dir):
    results = verify.run_checks(default_model_dir)
    assert {r.check for r in results} == set(verify.CHECKS)
    assert {(r.batch, r.seq) for r in results} == {(b, s) for b in verify.BATCHES for s in verify.SEQS}
    bad = [r for r in results if not r.ok]
    assert not bad, verify.format_table(bad)


@pytest.mark.parametrize(
    "attr,wrong,failing",
    [
        ("ONNX_ORDER", ("i", "f", "o", "c"), "numpy = onnxruntime"),
        ("TORCH_ORDER", ("i", "o", "c", "f"), "numpy = torch"),
    ],
)
def test_a_wrong_gate_mapping_fails_its_check(default_model_dir, monkeypatch, attr, wrong, failing):
    monkeypatch.setattr(verify.ref, attr, wrong)
    results = verify.run_checks(default_model_dir, checks={failing: verify.CHECKS[failing]})
    assert results and all(not r.ok for r in results if r.seq > 1)


def test_cli_prints_table_and_exit_code(default_model_dir):
    out = subprocess.run(
        [sys.executable, "-m", "export.verify", str(default_model_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "45 passed, 0 failed" in out.stdout
    for name in verify.CHECKS:
        assert name in out.stdout


def test_cli_missing_model_dir_is_a_message(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "export.verify", str(tmp_path / "nope")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """An LSTM (batch-first, outputs reordered) and a GRU (sequence-first), as a user exports
    them from torch, imported by lstm-import."""
    from export.lstm_import import import_model
    from tests.export.test_lstm_import import export

    tmp = tmp_path_factory.mktemp("verify")
    import_model(export(tmp / "l.onnx", True, ("hn", "cn", "y")), tmp / "repo", "lstm", "1", {}, None, None)
    import_model(export(tmp / "g.onnx", False, gru=True), tmp / "repo", "gru", "1", {}, None, None)
    return tmp / "repo"


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_an_imported_model_is_verified_from_its_own_weights(imported, name):
    out = subprocess.run(
        [sys.executable, "-m", "export.verify", str(imported / name / "1")], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "27 passed, 0 failed" in out.stdout
    for check in verify.IMPORTED_CHECKS:
        assert check in out.stdout


def test_the_imported_reference_fails_where_the_equations_differ(imported, monkeypatch):
    """The numpy GRU with the other reset placement (linear_before_reset 0, where torch's graph
    says 1) is a different cell: the check fails on every sequence longer than a step."""
    from export import graph_reference

    real = graph_reference.layers

    def other_reset(model):
        stack = real(model)
        for layer in stack:
            layer.linear_before_reset = not layer.linear_before_reset
        return stack

    monkeypatch.setattr(graph_reference, "layers", other_reset)
    results = verify.run_checks(imported / "gru" / "1")
    numpy = [r for r in results if r.check == "numpy = onnxruntime"]
    assert numpy and all(not r.ok for r in numpy if r.seq > 1), verify.format_table(numpy)
    assert all(r.ok for r in results if r.check != "numpy = onnxruntime")
