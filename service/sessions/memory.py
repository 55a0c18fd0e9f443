"""The in-memory session store: a dict, TTL by last use, a bounded number of sessions.

Everything runs on the event loop thread, so each method is atomic. The dict is kept in
order of last use (a commit moves its record to the end), so a sweep stops at the first
live record: it costs the number of expired sessions, not the number of sessions.

The states live in one arena per model version (:mod:`service.sessions.arena`): a record
handed to ``create``, ``commit_many`` or ``restore`` is kept with its state copied into its
session's row, and its ``state`` and ``slot`` set to that row (the data plane never uses a
record otherwise after handing it over). A batch reads its states with one copy
(``gather``), and a commit writes each new state into its row.

With ``keep_state_in(directory, ...)`` the sessions survive a graceful restart: ``close``
(called after the last batch has finished) writes them to a state file, and ``start``
(called before the service turns ready) reads them back; see ``state_file``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from service.errors import CapacityExceeded, NotReady
from service.sessions import state_file
from service.sessions.arena import FIRST_CAPACITY, Arena
from service.sessions.record import SessionRecord, stack_states

log = logging.getLogger("service.sessions")


class MemoryStore:
    def __init__(
        self,
        ttl_s: float,
        sweep_interval_s: float = 5.0,
        on_expire: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
        rows: int = FIRST_CAPACITY,
    ) -> None:
        """``rows``: how many session rows each model version's arena reserves at first (the
        most sessions the store may hold: then it never grows; see :mod:`arena`)."""
        self.ttl_s = ttl_s
        self._rows = rows
        self._sweep_interval = sweep_interval_s
        self._on_expire = on_expire or (lambda n: None)
        self.clock = clock
        self._data: dict[str, SessionRecord] = {}
        self.save_failed = False
        self._sealed = False
        self.restart_note = (  # set again by keep_state_in
            ", or was lost when the service restarted (it keeps sessions in memory only: LSTM_STATE_DIR keeps "
            "them across a graceful restart)"
        )
        self._owned: dict[str, int] = {}  # live sessions per owner
        self._arenas: dict[tuple[str, str], Arena] = {}  # per (model, version)
        self._task: asyncio.Task | None = None
        self._state_dir: Path | None = None
        self._served: Callable[[], Mapping[str, str]] = dict
        self._on_load: Callable[[state_file.LoadReport], None] = lambda report: None

    def keep_state_in(
        self,
        directory: Path,
        served: Callable[[], Mapping[str, str]],
        on_load: Callable[[state_file.LoadReport], None] | None = None,
    ) -> None:
        """Save the sessions to ``directory`` on ``close`` and load them on ``start``.

        ``served()`` maps each served ``name/version`` to its model's sha256 (asked at start,
        once the models are loaded); sessions of other models or checksums are refused.
        ``on_load`` receives the load report (for metrics).
        """
        self._state_dir = directory
        self.restart_note = ", or was lost when the service restarted without saving (a crash)"
        self._served = served
        if on_load is not None:
            self._on_load = on_load

    async def start(self) -> None:
        if self._state_dir is not None:
            self._load_state(self._state_dir)
        self._task = asyncio.get_running_loop().create_task(self._sweeper())

    async def seal(self) -> None:
        """Save the sessions now (with a state directory) and take no write after: called once
        admission has stopped and the queued batches are done, so that the state is on disk
        before stragglers are waited on. A write that still comes is refused (503), never lost."""
        if self._state_dir is None or self._sealed:
            return
        self._save()
        self._sealed = True

    def _unsealed(self) -> None:
        if self._sealed:
            raise NotReady("the service is shutting down and has saved its sessions; retry on another replica")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self._sealed:
            self._save()

    def _save(self) -> None:
        if self._state_dir is not None:
            try:
                size = state_file.save(self._state_dir, self.records(), self._served())
            except OSError as e:  # a full or read-only volume: the sessions end, the shutdown goes on
                self.save_failed = True  # and the process exits non-zero
                log.error("could not save %d session(s) to %s: %s", len(self._data), self._state_dir, e)
            else:
                log.info("saved %d session(s) to %s (%d bytes)", len(self._data), self._state_dir, size)

    def _load_state(self, directory: Path) -> None:
        report = state_file.load(directory, self._served(), self.ttl_s, self.clock())
        if report.error:
            log.error(
                "refused the session state file in %s: %s; kept it as %s.corrupt and started with no saved sessions",
                directory,
                report.error,
                state_file.FILE_NAME,
            )
        self.restore(report.records)
        if report.records or report.refused:
            refused = ", ".join(f"{n} {why}" for why, n in sorted(report.refused.items())) or "none"
            log.info(
                "restored %d session(s) from %s; refused: %s (model = version not served, checksum = model changed, "
                "expired = idle past the TTL)",
                len(report.records),
                directory,
                refused,
            )
        self._on_load(report)

    def arena(self, model: str, version: str) -> Arena | None:
        """The arena of one model version's states; None while it has no session."""
        return self._arenas.get((model, version))

    def records(self) -> list[SessionRecord]:
        """Every stored record (expired ones not yet swept included), least recently used first."""
        return list(self._data.values())

    def restore(self, records: Iterable[SessionRecord]) -> None:
        """Put records back as they were (id, rev, times, owner), ignoring capacity: they were
        live sessions, and live sessions are never dropped to make room."""
        for rec in sorted(records, key=lambda r: r.last_used):
            self._keep(rec)

    def _keep(self, rec: SessionRecord) -> None:
        """Store a session (in place of one with its id): its state into a row of its version's
        arena, at the end of the last-use order."""
        key = (rec.model, rec.version)
        arena = self._arenas.get(key)
        if arena is None:
            arena = self._arenas[key] = self._new_arena(rec.state)
        slot, grew = arena.add(rec.state)  # refuses a state of another shape before anything changes
        old = self._data.pop(rec.id, None)
        if old is not None:  # after the add: the arena, holding the new row, stays
            self._forget(old)
        if grew:  # the stored records' views are of the old array
            for r in self._data.values():
                if r.version == rec.version and r.model == rec.model:
                    r.state = arena.view(r.slot)
        rec.slot, rec.state = slot, arena.view(slot)
        self._data[rec.id] = rec
        if rec.owner is not None:
            self._owned[rec.owner] = self._owned.get(rec.owner, 0) + 1

    def _new_arena(self, state: np.ndarray) -> Arena:
        try:
            return Arena(state.shape, self._rows)
        except OSError:  # more than the system maps in one piece: grow as needed instead
            log.warning(
                "could not reserve %d session rows of %d bytes at once; the rows grow as needed",
                self._rows,
                state.nbytes,
            )
            return Arena(state.shape)

    def _forget(self, rec: SessionRecord) -> None:
        """A session's removal: its row and its owner's count freed (the arena with its version's
        last session)."""
        key = (rec.model, rec.version)
        arena = self._arenas[key]
        arena.release(rec.slot)
        if not arena.used:
            del self._arenas[key]
        if rec.owner is not None:
            left = self._owned.get(rec.owner, 1) - 1
            if left:
                self._owned[rec.owner] = left
            else:
                self._owned.pop(rec.owner, None)

    async def ping(self) -> bool:
        return True

    def _live(self, rec: SessionRecord | None, now: float) -> SessionRecord | None:
        if rec is None or now - rec.last_used > self.ttl_s:
            return None
        return rec

    async def create(self, record: SessionRecord, max_sessions: int, max_per_owner: int | None = None) -> None:
        self._unsealed()
        owner = record.owner
        if len(self._data) >= max_sessions or (
            max_per_owner and owner is not None and self._owned.get(owner, 0) >= max_per_owner
        ):
            self.sweep()
        if len(self._data) >= max_sessions:
            raise CapacityExceeded(
                f"the service holds its maximum of {max_sessions} live sessions; delete idle sessions or retry later"
            )
        if max_per_owner and owner is not None and self._owned.get(owner, 0) >= max_per_owner:
            raise CapacityExceeded(
                f"this API key holds its maximum of {max_per_owner} live sessions; delete some first"
            )
        self._keep(record)

    caches = False  # every read is of the one copy

    async def get_many(self, ids: list[str], trust_cache: bool = False) -> list[SessionRecord | None]:
        now = self.clock()
        return [self._live(self._data.get(i), now) for i in ids]

    def gather(self, records: list[SessionRecord]) -> np.ndarray:
        slots = [r.slot for r in records]
        first = records[0]
        arena = self._arenas.get((first.model, first.version))
        if arena is None:  # sequences' starts only, of a version with no session yet
            return stack_states(records)
        if min(slots) >= 0:
            return arena.gather(slots)
        # sequences' starts among them: their zeros, which no row holds yet
        out = arena.gather([max(s, 0) for s in slots])
        for k, s in enumerate(slots):
            if s < 0:
                out[:, :, k] = records[k].state
        return out

    async def commit_many(self, records: list[SessionRecord]) -> list[bool]:
        self._unsealed()
        now = self.clock()
        ok = []
        for rec in records:
            cur = self._live(self._data.get(rec.id), now)
            if cur is None or cur.rev != rec.rev - 1:
                ok.append(False)
                continue
            row = cur.state  # the view of the session's row in its arena
            row[...] = rec.state
            rec.slot, rec.state = cur.slot, row
            del self._data[rec.id]  # re-insert at the end: the dict stays in last-use order
            self._data[rec.id] = rec
            ok.append(True)
        return ok

    async def delete(self, session_id: str, owner: str | None = None) -> bool:
        self._unsealed()
        rec = self._data.pop(session_id, None)
        if rec is not None:
            self._forget(rec)
        return rec is not None

    async def count(self) -> int:
        """Live sessions (expired ones are swept first, as the Redis store prunes)."""
        self.sweep()
        return len(self._data)

    def _of_version(self, model: str, version: str) -> list[str]:
        self.sweep()
        prefix = f"{model}.{version}."
        return [k for k in self._data if k.startswith(prefix)]

    async def count_version(self, model: str, version: str) -> int:
        return len(self._of_version(model, version))

    async def delete_version(self, model: str, version: str) -> int:
        ids = self._of_version(model, version)
        for k in ids:
            self._forget(self._data.pop(k))
        return len(ids)

    def sweep(self) -> int:
        now = self.clock()
        dead = []
        for k, r in self._data.items():
            if now - r.last_used <= self.ttl_s:
                break
            dead.append(k)
        for k in dead:
            self._forget(self._data.pop(k))
        if dead:
            self._on_expire(len(dead))
        return len(dead)

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            self.sweep()
