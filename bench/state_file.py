"""What the memory store's state file costs at shutdown and start-up: ``python -m
bench.state_file [--sessions 100000]`` saves that many sessions of the default model (each after
one step, so with its last reply) with the service's own writer (``service.sessions.state_file``:
encode, write, fsync, rename) into a directory beside the repository, loads them back, and
writes ``docs/bench/state_file.json`` and the "Size and time" figures of ``docs/deployment.md``
from the run (``--render``: from the saved file)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.run import machine, put_section
from harness.paths import DEFAULT_MODEL, ROOT
from service.runtime.repository import read_card
from service.sessions import state_file
from service.sessions.record import LastStep, SessionRecord, new_session_id

BEGIN, END = "<!-- state-file:begin -->", "<!-- state-file:end -->"


def records(n: int) -> list[SessionRecord]:
    """``n`` sessions of the default model after one step each (state, ids, times, last reply)."""
    c = read_card(DEFAULT_MODEL)
    rng = np.random.default_rng(0)
    now = time.time()
    out = []
    for _ in range(n):
        state = rng.standard_normal((len(c.states), c.num_layers, c.hidden_size)).astype(np.float32)
        last = LastStep(0, bytes(16), np.zeros((1, c.n_outputs), np.float32))
        out.append(
            SessionRecord(
                new_session_id(c.name, c.version), c.name, c.version, c.sha256, state, 1, now, now, 1, None, last
            )
        )
    return out


def run(n: int) -> dict[str, Any]:
    c = read_card(DEFAULT_MODEL)
    recs = records(n)
    served = {c.key: c.sha256}
    with tempfile.TemporaryDirectory(dir=ROOT) as d:  # the repository's disk, not a tmpfs
        t0 = time.perf_counter()
        size = state_file.save(Path(d), recs, served)
        t1 = time.perf_counter()
        report = state_file.load(Path(d), served, ttl_s=3600)
        t2 = time.perf_counter()
    assert len(report.records) == n and not report.error, report
    return {
        "machine": machine(),
        "sessions": n,
        "state_bytes": int(recs[0].state.nbytes),
        "file_bytes": size,
        "save_s": t1 - t0,
        "load_s": t2 - t1,
    }


def section(r: dict[str, Any]) -> str:
    return (
        f"{BEGIN}{r['file_bytes'] / r['sessions']:,.0f} bytes per session of the default model (its state is "
        f"{r['state_bytes']:,} bytes). Measured for {r['sessions']:,} sessions with `python -m bench.state_file` "
        f"({r['machine']}): a {r['file_bytes'] / 1e6:,.0f} MB file, written in {r['save_s']:.1f} s and loaded in "
        f"{r['load_s']:.1f} s.{END}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.state_file", description=__doc__)
    ap.add_argument("--sessions", type=int, default=100_000, help="the default LSTM_MAX_SESSIONS")
    ap.add_argument("--render", action="store_true")
    a = ap.parse_args()
    saved = ROOT / "docs" / "bench" / "state_file.json"
    r = json.loads(saved.read_text()) if a.render else run(a.sessions)
    if not a.render:
        saved.write_text(json.dumps(r, indent=1) + "\n")
    put_section(ROOT / "docs" / "deployment.md", BEGIN, END, section(r))
    print(section(r))


if __name__ == "__main__":
    main()
