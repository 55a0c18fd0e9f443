"""The session record's bytes (Redis and the state file): round trips for an LSTM's h and C and
a GRU's h, and records of the previous format (always h and C) still read."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from service.sessions import codec
from service.sessions.record import LastStep, SessionRecord


def record(parts: int, last: bool) -> SessionRecord:
    rng = np.random.default_rng(parts)
    return SessionRecord(
        id="m.1.abc",
        model="m",
        version="1",
        sha256="f" * 64,
        state=rng.standard_normal((parts, 3, 5)).astype(np.float32),
        step=7,
        created=1.5,
        last_used=2.5,
        rev=4,
        owner="key-a",
        last=LastStep(6, b"d" * 16, rng.standard_normal((1, 2)).astype(np.float32)) if last else None,
    )


@pytest.mark.parametrize("parts", [2, 1], ids=["lstm", "gru"])
@pytest.mark.parametrize("last", [False, True])
def test_round_trip(parts: int, last: bool):
    rec = record(parts, last)
    back = codec.decode(rec.id, codec.encode(rec), rec.rev)
    assert back.state.shape == (parts, 3, 5)
    np.testing.assert_array_equal(back.state, rec.state)
    assert (back.step, back.created, back.last_used, back.owner, back.model) == (7, 1.5, 2.5, "key-a", "m")
    assert (back.last is None) == (not last)
    if last:
        assert back.last is not None and rec.last is not None
        np.testing.assert_array_equal(back.last.outputs, rec.last.outputs)


def test_a_record_of_the_previous_format_reads_as_h_and_c():
    rec = record(2, True)
    blob = codec.encode(rec)
    head = codec._HEAD.size
    old = struct.pack("<B", 1) + blob[1:head] + blob[head + 1 :]  # format 1: no state-count byte
    back = codec.decode(rec.id, old, rec.rev)
    np.testing.assert_array_equal(back.state, rec.state)


def test_an_unknown_format_is_refused():
    blob = codec.encode(record(1, False))
    with pytest.raises(ValueError, match="unknown record format 9"):
        codec.decode("x", b"\x09" + blob[1:], 0)
