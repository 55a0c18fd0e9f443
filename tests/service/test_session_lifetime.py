"""Sessions live as long as the model's memory: the card's ``session_ttl_s`` is the default
TTL (a setting overrides it), and ``make serve`` keeps sessions across a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.procs import free_port, wait_ready
from harness.reference import Offline, random_steps
from harness.server import run_to_exit, running_server
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

FOURTEEN_DAYS = 14 * 86400


@pytest.mark.parametrize("setting", [None, "60"])
def test_the_default_ttl_is_the_cards_and_a_setting_overrides_it(setting: str | None):
    env = {} if setting is None else {"LSTM_SESSION_TTL_S": setting}
    if setting is None and "LSTM_SESSION_TTL_S" in os.environ:
        pytest.fail("LSTM_SESSION_TTL_S is set in the test environment")
    with running_server(env) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        info = c.post("/v1/sessions", json={"model": "demand"}).json()
        life = info["expires_at"] - info["last_used_at"]
        want = FOURTEEN_DAYS if setting is None else 60
        assert life == pytest.approx(want), info
        config = c.get("/v2/models/demand/config").json()
        assert config["sequence_batching"]["max_sequence_idle_microseconds"] == want * 10**6


def _make_serve(port: int, state: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "LSTM_GRPC_PORT": str(free_port())}
    env.pop("LSTM_STATE_DIR", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            ["make", "-s", "serve", f"PORT={port}", f"STATE_DIR={state}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_a_session_under_make_serve_continues_exactly_after_a_restart(tmp_path: Path, offline: Offline):
    port, state, log = free_port(), tmp_path / "state", tmp_path / "serve.log"
    x = random_steps(np.random.default_rng(21), 6)
    url = f"http://127.0.0.1:{port}"
    outputs: list = []
    sid = None
    for half in (x[:3], x[3:]):
        proc = _make_serve(port, state, log)
        try:
            wait_ready(proc, url + "/v2/health/ready", 120, log.read_text)
            with httpx.Client(base_url=url, timeout=30) as c:
                if sid is None:
                    sid = c.post("/v1/sessions", json={"model": "demand"}).json()["session_id"]
                step = len(outputs)
                r = c.post(f"/v1/sessions/{sid}/step", json={"inputs": half.tolist(), "expected_step": step})
                assert r.status_code == 200, (r.text, log.read_text()[-2000:])
                outputs += r.json()["outputs"]
        finally:
            (server,) = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            os.kill(int(server), signal.SIGTERM)  # the server make runs: a graceful stop, and make ends with it
            t0 = time.monotonic()
            assert proc.wait(60) == 0, log.read_text()[-2000:]
            assert time.monotonic() - t0 < 30
    assert "saved 1 session(s)" in log.read_text() and "restored 1 session(s)" in log.read_text()
    offline.assert_outputs_close(np.array(outputs), offline.run(x)[0])


def test_a_new_session_is_warmed_with_eight_weeks_of_history_in_one_call(server, offline: Offline):
    """A client with history starts a session in one step of every reading it has: eight
    weeks of half hours (2,688 readings, about 90 kB of JSON) fit one request, under
    LSTM_MAX_STEPS_PER_REQUEST (4,096) and LSTM_MAX_BODY_BYTES (8 MiB). The steps after it
    equal the one-pass run over history and steps together."""
    from export.data import STEPS_PER_WEEK, load

    x = load("taylor").features[: 8 * STEPS_PER_WEEK + 6]
    history, then = x[:-6], x[-6:]
    with httpx.Client(base_url=server.url, timeout=60) as c:
        sid = c.post("/v1/sessions", json={"model": "demand"}).json()["session_id"]
        r = c.post(f"/v1/sessions/{sid}/step", json={"inputs": history.tolist(), "expected_step": 0})
        assert r.status_code == 200 and r.json()["step"] == len(history), r.text[:300]
        assert len(r.request.content) < 8 * 2**20
        outputs = []
        for t, row in enumerate(then):
            r = c.post(f"/v1/sessions/{sid}/step", json={"inputs": [row.tolist()], "expected_step": len(history) + t})
            assert r.status_code == 200, r.text
            outputs += r.json()["outputs"]
    offline.assert_outputs_close(np.array(outputs), offline.run(x)[0][-6:])


def test_a_card_may_declare_a_ttl_shorter_than_an_hour(tmp_path: Path):
    from harness.repository import add_version

    add_version(tmp_path, "short", 1, session_ttl_s=600)
    with running_server(repo=tmp_path) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        info = c.post("/v1/sessions", json={"model": "short"}).json()
        assert info["expires_at"] - info["last_used_at"] == pytest.approx(600), info


@pytest.mark.parametrize("field,value", [("session_ttl_s", "Infinity"), ("session_ttl_s", 0)])
def test_a_card_with_a_ttl_that_is_not_a_finite_positive_number_is_refused(tmp_path: Path, field: str, value):
    import json

    from harness.repository import add_version

    version = add_version(tmp_path, "bad", 1)
    card = json.loads((version / "model.json").read_text())
    text = json.dumps(card | {field: 12345}).replace("12345", str(value))  # JSON's Infinity as Python writes it
    (version / "model.json").write_text(text)
    done = run_to_exit(tmp_path)
    assert done.returncode == 2 and "session_ttl_s" in done.stderr, done.stderr[-1000:]
