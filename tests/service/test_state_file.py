"""The memory store's state file: format, atomic write, refusals, and the store's save/load."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from service.sessions import state_file
from service.sessions.memory import MemoryStore
from service.sessions.record import LastStep, SessionRecord

SERVED = {"demand/1": "a" * 64}


def record(i: int, *, model: str = "demand", version: str = "1", sha: str = "a" * 64, last_used: float = 1000.0):
    rng = np.random.default_rng(i)
    return SessionRecord(
        id=f"{model}.{version}.s{i}",
        model=model,
        version=version,
        sha256=sha,
        state=rng.standard_normal((2, 2, 8)).astype(np.float32),
        step=10 + i,
        created=500.0,
        last_used=last_used + i,
        rev=3 + i,
        owner="key" if i % 2 else None,
        last=LastStep(from_step=9 + i, digest=bytes(range(16)), outputs=np.full((1, 1), i, np.float32)),
    )


def same(a: SessionRecord, b: SessionRecord) -> None:
    assert (a.id, a.model, a.version, a.sha256, a.step, a.created, a.last_used, a.rev, a.owner) == (
        b.id,
        b.model,
        b.version,
        b.sha256,
        b.step,
        b.created,
        b.last_used,
        b.rev,
        b.owner,
    )
    assert np.array_equal(a.state, b.state)
    assert a.last is not None and b.last is not None
    assert (a.last.from_step, a.last.digest) == (b.last.from_step, b.last.digest)
    assert np.array_equal(a.last.outputs, b.last.outputs)


def test_save_then_load_gives_every_record_back_and_consumes_the_file(tmp_path: Path):
    recs = [record(i) for i in range(5)]
    state_file.save(tmp_path, recs, SERVED)
    assert os.listdir(tmp_path) == [state_file.FILE_NAME], "no temporary file is left behind"
    report = state_file.load(tmp_path, SERVED, ttl_s=3600, now=1010.0)
    assert report.error is None and report.refused == {}
    for a, b in zip(recs, report.records, strict=True):
        same(a, b)
    assert not (tmp_path / state_file.FILE_NAME).exists(), "a crash after loading must not bring old steps back"


def test_sessions_of_a_gone_version_a_changed_model_or_past_their_ttl_are_refused(tmp_path: Path):
    recs = [record(0), record(1, version="2"), record(2, sha="b" * 64), record(3, last_used=0.0)]
    state_file.save(tmp_path, recs, SERVED)
    report = state_file.load(tmp_path, SERVED, ttl_s=100, now=1010.0)
    assert [r.id for r in report.records] == [recs[0].id]
    assert report.refused == {"model": 1, "checksum": 1, "expired": 1}


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:-1],
        lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:],  # one bit flipped
        lambda b: b"",
        lambda b: b"not a state file at all, but long enough to be read" * 3,
        lambda b: b[:8] + b"\x09\x00" + b[10:],  # another format
    ],
    ids=["half", "last-byte", "bit-flip", "empty", "garbage", "format"],
)
def test_a_damaged_file_is_refused_whole_and_kept_aside(tmp_path: Path, damage):
    state_file.save(tmp_path, [record(i) for i in range(3)], SERVED)
    path = tmp_path / state_file.FILE_NAME
    path.write_bytes(damage(path.read_bytes()))
    report = state_file.load(tmp_path, SERVED, ttl_s=3600, now=1000.0)
    assert report.error and report.records == []
    assert not path.exists() and (tmp_path / (state_file.FILE_NAME + ".corrupt")).exists()


def test_a_valid_digest_over_a_bad_body_is_still_refused():
    # the digest matches, but the body claims more sessions than it holds
    good = state_file.encode_file([record(0)], SERVED, 0.0)
    body = good[:-32].replace(b'"sessions": 1', b'"sessions": 2')

    with pytest.raises(state_file.CorruptStateFile):
        state_file.decode_file(body + hashlib.sha256(body).digest())


def test_no_file_is_no_sessions(tmp_path: Path):
    report = state_file.load(tmp_path, SERVED, ttl_s=3600)
    assert report.records == [] and report.refused == {} and report.error is None


async def test_memory_store_saves_on_close_and_restores_on_start_with_expiry_continuing(tmp_path: Path):
    now = [2000.0]
    store = MemoryStore(ttl_s=100, clock=lambda: now[0])
    store.keep_state_in(tmp_path, lambda: SERVED)
    await store.start()
    for i in range(4):
        await store.create(record(i, last_used=1950.0 - 10 * i), max_sessions=10)
    await store.close()

    now[0] = 2040.0  # records last used at 1950, 1941, 1932, 1923: the last two are past the TTL by now
    reports: list[state_file.LoadReport] = []
    again = MemoryStore(ttl_s=100, clock=lambda: now[0])
    again.keep_state_in(tmp_path, lambda: SERVED, reports.append)
    await again.start()
    try:
        assert reports[0].refused == {"expired": 2}
        got = await again.get_many([record(i).id for i in range(4)])
        assert [g is not None for g in got] == [True, True, False, False]
        assert got[0] is not None and got[0].step == 10 and got[0].rev == 3
        assert [r.last_used for r in again.records()] == sorted(r.last_used for r in again.records())
        now[0] = 2052.0  # idle time counts from the saved last use: 1950 + 100 < 2052
        assert again.sweep() == 2 and await again.count() == 0
    finally:
        await again.close()


async def test_a_failed_save_is_logged_and_the_shutdown_goes_on(tmp_path: Path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = MemoryStore(ttl_s=100)
    store.keep_state_in(blocker, lambda: SERVED)
    await store.create(record(0, last_used=0.0), max_sessions=10)
    await store.close()
    assert "could not save 1 session(s)" in caplog.text
