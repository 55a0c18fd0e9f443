"""A session record as compact bytes, for stores outside the process (Redis).

Layout (little-endian): a fixed header ``<B I I Q d d`` (format, layers, hidden, step,
created, last used) and u8 state tensors ``S`` (2 for an LSTM's h and C, 1 for a GRU's h;
format 1 had no such byte and always 2); model, version, sha256 and owner as
u16-length-prefixed UTF-8; the float32 state ``[S, layers, hidden]``; then the last reply: u8 flag, and when set
u64 from-step, 16-byte digest, u32 T, u32 outputs, float32 ``[T, outputs]``. ``rev`` is
kept beside the blob by the store, so compare-and-set needs no decoding.
"""

from __future__ import annotations

import struct
from functools import lru_cache

import numpy as np

from service.sessions.record import LastStep, SessionRecord

FORMAT = 2
_HEAD = struct.Struct("<BIIQdd")
_LAST = struct.Struct("<Q16sII")


@lru_cache(maxsize=1024)
def _names(parts: int, model: str, version: str, sha256: str, owner: str | None) -> bytes:
    """The state-tensor count and the four strings, as encoded: the same for every write of
    a session, so built once per (model version, owner)."""
    out = [bytes((parts,))]
    for s in (model, version, sha256, owner):
        b = (s or "").encode()
        out += (struct.pack("<H", len(b)), b)
    return b"".join(out)


def encode(rec: SessionRecord) -> bytes:
    parts, layers, hidden = rec.state.shape
    out = [
        _HEAD.pack(FORMAT, layers, hidden, rec.step, rec.created, rec.last_used),
        _names(parts, rec.model, rec.version, rec.sha256, rec.owner),
        np.ascontiguousarray(rec.state, "<f4").tobytes(),
    ]
    if rec.last is None:
        out.append(b"\x00")
    else:
        t, n = rec.last.outputs.shape
        out.append(b"\x01" + _LAST.pack(rec.last.from_step, rec.last.digest, t, n))
        out.append(np.ascontiguousarray(rec.last.outputs, "<f4").tobytes())
    return b"".join(out)


def decode(session_id: str, blob: bytes, rev: int) -> SessionRecord:
    view = memoryview(blob)
    fmt, layers, hidden, step, created, last_used = _HEAD.unpack_from(view, 0)
    if fmt not in (1, FORMAT):
        raise ValueError(f"session {session_id}: unknown record format {fmt}")
    off = _HEAD.size
    parts = 2
    if fmt == FORMAT:
        parts = view[off]
        off += 1
    strs = []
    for _ in range(4):
        (n,) = struct.unpack_from("<H", view, off)
        strs.append(bytes(view[off + 2 : off + 2 + n]).decode())
        off += 2 + n
    size = parts * layers * hidden * 4
    state = np.frombuffer(view[off : off + size], "<f4").reshape(parts, layers, hidden).copy()
    off += size
    last = None
    if view[off]:
        from_step, d, t, n = _LAST.unpack_from(view, off + 1)
        off += 1 + _LAST.size
        outputs = np.frombuffer(view[off : off + t * n * 4], "<f4").reshape(t, n).copy()
        last = LastStep(from_step=from_step, digest=d, outputs=outputs)
    model, version, sha, owner = strs
    return SessionRecord(
        id=session_id,
        model=model,
        version=version,
        sha256=sha,
        state=state,
        step=step,
        created=created,
        last_used=last_used,
        rev=rev,
        owner=owner or None,
        last=last,
    )
