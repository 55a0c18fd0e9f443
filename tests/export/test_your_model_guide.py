"""docs/your-model.md, run as written: its torch export, its lstm-import command (printing what
the page shows), make serve on the new repository, and its curl commands."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.procs import free_port, wait_ready
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

GUIDE = ROOT / "docs" / "your-model.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", GUIDE.read_text(), re.S)


def test_the_guide_runs_as_written(tmp_path: Path):
    python, bash, text = blocks("python"), blocks("bash"), blocks("text")
    exe = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{exe}:{os.environ['PATH']}"}
    # 1. export
    subprocess.run([sys.executable, "-c", python[0]], cwd=tmp_path, env=env, check=True, timeout=300)
    assert (tmp_path / "forecaster.onnx").is_file()
    # 2. import: prints what the page shows
    done = subprocess.run(["bash", "-c", bash[0]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == text[0], done.stdout
    # 4. a GRU: exported and imported as the page shows, served beside the LSTM
    subprocess.run([sys.executable, "-c", python[1]], cwd=tmp_path, env=env, check=True, timeout=300)
    done = subprocess.run(["bash", "-c", bash[3]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == text[1], done.stdout
    # 5. verify, both models
    for model in ("forecaster", "gru-forecaster"):
        cmd = bash[4].replace("models/forecaster/1", f"models/{model}/1")
        done = subprocess.run(
            ["bash", "-c", f"cd {ROOT} && {cmd.replace('models/', f'{tmp_path}/models/')}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0 and done.stdout.endswith(text[2]), done.stdout[-2000:] + done.stderr[-2000:]
    # 6. a series of one's own: the page's CSV layout, written by the test (eight weeks, hourly)
    from tests.export.test_train_csv import write_series

    write_series(tmp_path / "site.csv").drop(columns=["site", "temp_c"]).to_csv(tmp_path / "site.csv", index=False)
    assert (tmp_path / "site.csv").read_text().splitlines()[0] == text[3].splitlines()[0]
    cmd = f"cd {ROOT} && " + bash[5].strip().replace("site.csv", str(tmp_path / "site.csv")).replace(
        "--models models", f"--models {tmp_path / 'models'}"
    )
    done = subprocess.run(["bash", "-c", cmd + " --epochs 2"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "models" / "site" / "1" / "heldout.json").is_file()
    # 3. serve (make serve, from the project, on the new repository) and stream
    port = free_port()
    serve = bash[1].strip().replace("make serve", f"make -s -C {ROOT} serve PORT={port} STATE_DIR={tmp_path / 'state'}")
    serve = serve.replace("LSTM_MODEL_REPOSITORY=models", f"LSTM_MODEL_REPOSITORY={tmp_path / 'models'}")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec env {serve}"],
            cwd=tmp_path,
            env={**env, "LSTM_GRPC_PORT": str(free_port())},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}/v2/health/ready", 120, log.read_text)
        curl = bash[2].replace("localhost:8000", f"127.0.0.1:{port}")
        done = subprocess.run(["bash", "-c", curl], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        reply = json.loads(done.stdout)
        assert reply["step"] == 1 and len(reply["outputs"][0]) == 2, done.stdout
        # the same commands stream the model trained on the CSV (hour 0 of a Monday, 100 kW)
        site = curl.replace('"model": "forecaster"', '"model": "site"').replace(
            "[[0.1, 0.2, 0.3, 0.4, 0.5]]", "[[100.0, 0.0, 0.0]]"
        )
        done = subprocess.run(["bash", "-c", site], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        reply = json.loads(done.stdout)
        assert reply["step"] == 1 and len(reply["outputs"][0]) == 1, done.stdout
        # the same commands stream the GRU
        gru = curl.replace('"model": "forecaster"', '"model": "gru-forecaster"')
        done = subprocess.run(["bash", "-c", gru], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        reply = json.loads(done.stdout)
        assert reply["step"] == 1 and len(reply["outputs"][0]) == 2, done.stdout
    finally:
        if proc.poll() is None:
            for server in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                os.kill(int(server), signal.SIGTERM)  # the server make runs; make ends with it
            proc.wait(60)
