"""Schemathesis against the service's own OpenAPI document, every check and every phase
(examples, coverage, fuzzing, stateful): no server error, no undocumented status, no reply
off its schema or content type, no wrong ``Allow``, no schema-invalid body accepted, and no
schema-valid body refused -- with one stated exception.

**The exception**: the operations that carry a model's tensors (predict, session steps,
session create and import, v2 infer) are run with every check but
``positive_data_acceptance``. What those bodies must hold is the served model's card -- its
number of features, its layers and hidden size, the state tensors of its cell (h and C for
an LSTM, h alone for a GRU), its feature ranges and grids -- and one document serves every
model, so it cannot state them; nor can JSON Schema state that nested lists are rectangular
or that a tensor's data fills its shape. Those operations' descriptions say so, and every
other check still runs on them (an accepted schema-invalid body, a server error or an
undocumented status fails them as anywhere else).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

TENSOR_OPERATIONS = r"^/v1/models/\{model\}/(versions/\{version\}/)?predict$|^/v1/sessions(/import|/\{session_id\}/step)?$|^/v2/models/\{model\}/(versions/\{version\}/)?infer$"
EXEMPT_CHECK = "positive_data_acceptance"


def schemathesis(url: str, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    cmd = [exe, "run", url + "/openapi.json", "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful"]
    cmd += ["--max-examples", "20", "--seed", "1", "--generation-deterministic", "--no-color", *args]
    with tempfile.TemporaryDirectory() as cwd:  # st keeps a cache of crashes where it runs: not in the repository
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)


def selected(out: str) -> tuple[int, int]:
    """``Selected: N/M`` of the run's summary: operations run, of all."""
    found = re.search(r"Selected:\s*(\d+)/(\d+)", out)
    assert found, out[-3000:]
    return int(found[1]), int(found[2])


def tensor_operations(server) -> list[tuple[str, str, dict]]:
    spec = httpx.get(server.url + "/openapi.json").json()
    return [(p, m, op) for p, ops in spec["paths"].items() if re.search(TENSOR_OPERATIONS, p) for m, op in ops.items()]


def test_every_operation_but_the_tensor_ones_passes_every_check(server):
    done = schemathesis(server.url, "--exclude-path-regex", TENSOR_OPERATIONS)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    run, total = selected(done.stdout)
    assert total >= 25 and run == total - len(tensor_operations(server)), (run, total)


def test_the_tensor_operations_pass_every_check_but_the_exempt_one(server):
    done = schemathesis(server.url, "--include-path-regex", TENSOR_OPERATIONS, "--exclude-checks", EXEMPT_CHECK)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert selected(done.stdout)[0] == len(tensor_operations(server))


def test_the_exempt_operations_say_so(server):
    """Every operation left out of the one check carries a body of tensors and says in its
    description what the card adds to the schema."""
    exempt = tensor_operations(server)
    assert {(p, m) for p, m, _ in exempt} == {
        ("/v1/models/{model}/predict", "post"),
        ("/v1/models/{model}/versions/{version}/predict", "post"),
        ("/v1/sessions", "post"),
        ("/v1/sessions/import", "post"),
        ("/v1/sessions/{session_id}/step", "post"),
        ("/v2/models/{model}/infer", "post"),
        ("/v2/models/{model}/versions/{version}/infer", "post"),
    }
    for path, method, op in exempt:
        assert "served model's card" in op.get("description", ""), (method, path)
