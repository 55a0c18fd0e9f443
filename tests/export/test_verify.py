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
