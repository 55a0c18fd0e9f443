"""The memory store's sessions in one file, so that they survive a graceful restart.

Written once on shutdown, after the last step (``save``); read once at start, before the
service turns ready (``load``). Nothing is promised on a crash: a SIGKILL writes nothing, and
the file is consumed when it is loaded, so a crash later can never bring back older state
(steps get 404, never a silent step back in time). Redis with an append-only file is the
store for crash safety.

Layout (little-endian)::

    b"LSTMSESS" u16 format
    u32 n, then the JSON header: {"saved_at": s, "sessions": count, "models": {"name/version": sha256}}
    count times: u16 n, session id (UTF-8); u64 rev; u32 n, the record (``codec.encode``)
    32 bytes: sha256 of everything before

The write is atomic: a temporary file in the same directory, fsync, rename over the old
file, fsync of the directory. A file that is short, altered or of another format is refused
whole (and kept beside as ``*.corrupt`` for inspection); a session whose model version is no
longer served, or is served with another checksum, is refused alone. Neither stops the
service from starting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.metrics import Metrics
from service.sessions import codec
from service.sessions.record import SessionRecord

log = logging.getLogger("service.sessions")

FILE_NAME = "sessions.state"
MAGIC = b"LSTMSESS"
FORMAT = 1
_PREFIX = struct.Struct("<8sH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_DIGEST = 32


class CorruptStateFile(ValueError):
    """The file is not a complete state file of this format."""


@dataclass
class LoadReport:
    """What ``load`` did: the sessions it kept, and how many it refused and why."""

    records: list[SessionRecord] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # reason -> sessions
    error: str | None = None  # set when the whole file was refused

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


def encode_file(records: Iterable[SessionRecord], models: Mapping[str, str], saved_at: float) -> bytes:
    """The file's bytes. Each session is encoded on its own: one that cannot be (a field out
    of the format's range) is left out and logged, and every other session is saved."""
    parts: list[bytes] = []
    skipped = 0
    for rec in records:
        try:
            sid = rec.id.encode()
            blob = codec.encode(rec)
            parts.append(b"".join((_U16.pack(len(sid)), sid, _U64.pack(rec.rev), _U32.pack(len(blob)), blob)))
        except (struct.error, ValueError, OverflowError, UnicodeError) as e:
            skipped += 1
            log.error("session %r cannot be saved and is left out: %s", rec.id[:80], e)
    if skipped:
        log.error("left %d session(s) out of the state file; %d saved", skipped, len(parts))
    header = json.dumps({"saved_at": saved_at, "sessions": len(parts), "models": dict(models)}).encode()
    body = b"".join([_PREFIX.pack(MAGIC, FORMAT), _U32.pack(len(header)), header, *parts])
    return body + hashlib.sha256(body).digest()


def decode_file(data: bytes) -> tuple[dict, list[SessionRecord]]:
    """The header and the records; raises CorruptStateFile for anything but a whole, intact file."""
    if len(data) < _PREFIX.size + _U32.size + _DIGEST:
        raise CorruptStateFile(f"too short ({len(data)} bytes)")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    magic, fmt = _PREFIX.unpack_from(body, 0)
    if magic != MAGIC:
        raise CorruptStateFile("not a session state file")
    if fmt != FORMAT:
        raise CorruptStateFile(f"unknown format {fmt}")
    if hashlib.sha256(body).digest() != digest:
        raise CorruptStateFile("checksum mismatch (truncated or altered)")
    try:
        off = _PREFIX.size
        (n,) = _U32.unpack_from(body, off)
        header = json.loads(body[off + 4 : off + 4 + n])
        off += 4 + n
        records = []
        for _ in range(int(header["sessions"])):
            (n,) = _U16.unpack_from(body, off)
            sid = body[off + 2 : off + 2 + n].decode()
            off += 2 + n
            (rev,) = _U64.unpack_from(body, off)
            (n,) = _U32.unpack_from(body, off + 8)
            off += 12
            records.append(codec.decode(sid, body[off : off + n], rev))
            off += n
        if off != len(body):
            raise CorruptStateFile(f"{len(body) - off} bytes after the last session")
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        if isinstance(e, CorruptStateFile):
            raise
        raise CorruptStateFile(f"unreadable: {e}") from e
    return header, records


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(directory: Path, records: Iterable[SessionRecord], models: Mapping[str, str]) -> int:
    """Write the sessions atomically to ``directory/sessions.state``; returns the bytes written.

    ``models`` maps ``name/version`` to the sha256 of the served model, for the reader's log.
    """
    directory.mkdir(parents=True, exist_ok=True)
    data = encode_file(records, models, time.time())
    path = directory / FILE_NAME
    tmp = directory / f".{FILE_NAME}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(directory)
    return len(data)


def load(directory: Path, served: Mapping[str, str], ttl_s: float, now: float | None = None) -> LoadReport:
    """Read ``directory/sessions.state``, keep the sessions that can continue, consume the file.

    ``served`` maps ``name/version`` to the sha256 of each served model. A session is refused
    when its model version is not served (``model``), is served with another checksum
    (``checksum``) or it has been idle longer than ``ttl_s`` (``expired``). A damaged file is
    refused whole (``report.error``) and renamed to ``sessions.state.corrupt``. Never raises
    for what is in the file; an I/O error other than a missing file does raise.
    """
    report = LoadReport()
    path = directory / FILE_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return report
    now = time.time() if now is None else now
    try:
        _, records = decode_file(data)
    except CorruptStateFile as e:
        report.error = str(e)
        os.replace(path, path.with_name(FILE_NAME + ".corrupt"))
        _fsync_dir(directory)
        return report
    for rec in records:
        want = served.get(f"{rec.model}/{rec.version}")
        if want is None:
            report.refuse("model")
        elif want != rec.sha256:
            report.refuse("checksum")
        elif now - rec.last_used > ttl_s:
            report.refuse("expired")
        else:
            report.records.append(rec)
    # consumed: a crash from here on must not bring these sessions back at their old steps
    path.unlink()
    _fsync_dir(directory)
    return report


def attach(store: object, directory: Path, served: Callable[[], Mapping[str, str]], metrics: Metrics) -> None:
    """Make a memory store keep its sessions in ``directory`` across graceful restarts, with
    the load counted in ``metrics``. Other stores keep their sessions themselves: a warning."""
    from service.sessions.memory import MemoryStore

    if not isinstance(store, MemoryStore):
        log.warning("LSTM_STATE_DIR applies to the memory store only; %s keeps sessions itself", type(store).__name__)
        return

    def count(report: LoadReport) -> None:
        metrics.sessions_restored.inc(len(report.records))
        for reason, n in report.refused.items():
            metrics.sessions_refused.labels(reason).inc(n)
        if report.error:
            metrics.sessions_refused.labels("file").inc()

    store.keep_state_in(directory, served, count)
