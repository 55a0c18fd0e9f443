"""The Redis session store: any replica serves any session; a killed replica loses nothing.

Each session is one hash ``lstm:s:{<id>}`` with fields ``rev`` and ``b`` (the record as
compact bytes, :mod:`service.sessions.codec`), expiring through Redis TTL. Updates are
compare-and-set on ``rev`` in a Lua script, so two replicas can never both advance a
session from the same state; on Redis Cluster the script is called for one key at a time,
so nothing spans hash slots.

A batch costs one round trip, one script call that writes all its sessions, when this
process wrote them last (on a cluster, where one call's keys must share a hash slot, one
call per session, sent concurrently; a second round trip, rarely, refreshes entries of the
live set below): each process keeps the records it last wrote or read (``cache_size`` of
them, least recently used dropped), a batch steps from those copies and writes by
compare-and-set, and the data plane reads again, in one pipelined round trip, and runs
again only the sessions whose copy another replica made stale.

Capacity: live ids sit in a sorted set ``lstm:live`` scored by expiry time. Creation
prunes expired entries (counting them as expired) and refuses at ``max_sessions``. The
set is updated beside a write, not atomically with it; across replicas capacity can
overshoot by the number of concurrent creations. So that every commit does not write that
one key (on a Redis Cluster, one shard would take every step), an entry is written with
``LIVE_SLACK`` of the TTL to spare and refreshed only once that slack is used up: a score
never falls before the session's real expiry, and an expired session is pruned (counted as
expired) up to ``LIVE_SLACK`` of the TTL late.

Sessions of one model version (to count or remove them when the version is unloaded) are
found by scanning ``lstm:live`` for ids starting with ``<model>.<version>.``: no index is
kept on the hot path for an operation that runs when an operator unloads a version.

Faults: any Redis error becomes :class:`StoreUnavailable` (503, nothing changed).
Connections are re-established by the client on the next call.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from service.errors import CapacityExceeded, StoreUnavailable
from service.sessions import codec
from service.sessions.record import SessionRecord, stack_states

# compare-and-set of every record of a batch in one call: KEYS the sessions, ARGV the TTL in
# ms, then per key its expected rev, new rev and record; one 0/1 per key (on a cluster, where
# keys of one call must share a hash slot, it is called once per key)
CAS = """
local out = {}
for i, k in ipairs(KEYS) do
  local rev = redis.call('HGET', k, 'rev')
  if rev and tonumber(rev) == tonumber(ARGV[3 * i - 1]) then
    redis.call('HSET', k, 'rev', ARGV[3 * i], 'b', ARGV[3 * i + 1])
    redis.call('PEXPIRE', k, ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
LIVE = "lstm:live"
LIVE_SLACK = 0.1


def key(session_id: str) -> str:
    return "lstm:s:{" + session_id + "}"


def owned_key(owner: str) -> str:
    """Sessions per API key (expiry-scored, refreshed at creation; pruned when counted)."""
    return "lstm:owner:{" + owner + "}"


class RedisStore:
    def __init__(
        self,
        url: str,
        ttl_s: float,
        *,
        cluster: bool = False,
        timeout_s: float = 1.0,
        max_connections: int = 128,
        wait_s: float = 10.0,
        on_expire: Callable[[int], None] | None = None,
        cache_size: int = 0,
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.clock: Callable[[], float] = time.time
        self.cluster = cluster
        self.timeout_s = timeout_s
        self.max_connections = max_connections  # per process; past it a command waits up to wait_s for one
        self.wait_s = wait_s
        self._on_expire = on_expire or (lambda n: None)
        self.save_failed = False  # Redis keeps the sessions itself
        self.restart_note = ""
        self._r: Any = None
        self._cas_sha: str | None = None
        self._script: Any = None
        self.cache_size = cache_size
        # id -> (the record as last written or read, its score in LIVE as this process wrote it)
        self._cache: OrderedDict[str, tuple[SessionRecord, float]] = OrderedDict()

    @property
    def caches(self) -> bool:
        return self.cache_size > 0

    def _remember(self, record: SessionRecord, live_until: float) -> None:
        if not self.cache_size:
            return
        if record.state.base is not None:  # a row of its batch's array: keep the row, not the batch
            record.state = record.state.copy()
        self._cache[record.id] = (record, live_until)
        self._cache.move_to_end(record.id)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def start(self) -> None:
        t = self.timeout_s
        if self.cluster:
            from redis.asyncio.cluster import RedisCluster

            self._r = RedisCluster.from_url(
                self.url, socket_timeout=t, socket_connect_timeout=t, max_connections=self.max_connections
            )
        else:
            from redis.asyncio import BlockingConnectionPool, Redis

            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=self.wait_s,
                socket_timeout=t,
                socket_connect_timeout=t,
            )
            self._r = Redis(connection_pool=pool)

    async def seal(self) -> None:
        """Nothing to save: Redis holds every write already."""

    async def close(self) -> None:
        if self._r is not None:
            await self._r.aclose()
            if not self.cluster:  # a pool given to the client is the caller's to close
                await self._r.connection_pool.disconnect()

    async def _call(self, fn: Callable[[], Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            return await fn()
        except (RedisError, OSError) as e:
            raise StoreUnavailable(f"the session store (Redis) is unavailable: {e}; nothing was changed") from e

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self._r.ping))
        except StoreUnavailable:
            return False

    def _ttl_ms(self) -> int:
        return int(self.ttl_s * 1000)

    async def _prune(self) -> int:
        removed = int(await self._r.zremrangebyscore(LIVE, "-inf", self.clock()))
        if removed:
            self._on_expire(removed)
        return removed

    async def create(self, record: SessionRecord, max_sessions: int, max_per_owner: int | None = None) -> None:
        owned = owned_key(record.owner) if record.owner else None

        async def go() -> None:
            await self._prune()
            if await self._r.zcard(LIVE) >= max_sessions:
                raise CapacityExceeded(
                    f"the service holds its maximum of {max_sessions} live sessions; delete idle sessions or retry later"
                )
            if owned and max_per_owner:
                await self._r.zremrangebyscore(owned, "-inf", self.clock())
                if await self._r.zcard(owned) >= max_per_owner:
                    raise CapacityExceeded(
                        f"this API key holds its maximum of {max_per_owner} live sessions; delete some first"
                    )
            expiry = self.clock() + self.ttl_s
            live_until = expiry + LIVE_SLACK * self.ttl_s
            async with self._r.pipeline(transaction=False) as p:
                p.hset(key(record.id), mapping={"rev": record.rev, "b": codec.encode(record)})
                p.pexpire(key(record.id), self._ttl_ms())
                p.zadd(LIVE, {record.id: live_until}, gt=True)
                if owned:
                    p.zadd(owned, {record.id: expiry})
                    p.pexpire(owned, self._ttl_ms())
                await p.execute()
            self._remember(record, live_until)

        await self._call(go)

    async def get_many(self, ids: list[str], trust_cache: bool = False) -> list[SessionRecord | None]:
        out: list[SessionRecord | None] = [None] * len(ids)
        missing = list(range(len(ids)))
        if trust_cache and self._cache:
            missing = []
            for n, i in enumerate(ids):
                hit = self._cache.get(i)
                if hit is None:
                    missing.append(n)
                else:
                    out[n] = hit[0]
        if not missing:
            return out

        async def go() -> list[Any]:
            async with self._r.pipeline(transaction=False) as p:
                for n in missing:
                    p.hmget(key(ids[n]), "rev", "b")
                return await p.execute()

        rows = await self._call(go)
        for n, (rev, blob) in zip(missing, rows, strict=True):
            i = ids[n]
            if rev is None or blob is None:
                self._cache.pop(i, None)
                continue
            rec = out[n] = codec.decode(i, blob, int(rev))
            cached = self._cache.get(i)
            self._remember(rec, cached[1] if cached is not None else 0.0)
        return out

    def gather(self, records: list[SessionRecord]) -> np.ndarray:
        return stack_states(records)

    async def commit_many(self, records: list[SessionRecord]) -> list[bool]:
        from redis.exceptions import NoScriptError

        if not records:
            return []

        ttl = self._ttl_ms()
        now = self.clock()
        # LIVE is written only for sessions whose score (as far as this process knows) would
        # fall before their new expiry: most commits write nothing but their own key
        live_until = now + (1 + LIVE_SLACK) * self.ttl_s
        stale = {}
        for rec in records:
            cached = self._cache.get(rec.id)
            if cached is None or cached[1] < now + self.ttl_s:
                stale[rec.id] = live_until

        def cas_args(recs: list[SessionRecord]) -> list[Any]:
            args: list[Any] = [ttl]
            for rec in recs:
                args += (rec.rev - 1, rec.rev, codec.encode(rec))
            return args

        async def one_call() -> list[Any]:
            if self._cas_sha is None:
                self._cas_sha = await self._r.script_load(CAS)
            return list(
                await self._r.evalsha(
                    self._cas_sha, len(records), *(key(rec.id) for rec in records), *cas_args(records)
                )
            )

        async def clustered() -> list[Any]:
            # a call's keys must share a hash slot: one call per key, sent concurrently
            script = self._script or self._r.register_script(CAS)
            self._script = script
            res = await asyncio.gather(*(script(keys=[key(rec.id)], args=cas_args([rec])) for rec in records))
            return [r[0] for r in res]

        write = clustered if self.cluster else one_call
        try:
            res = await self._call(write)
        except StoreUnavailable as e:
            if not isinstance(e.__cause__, NoScriptError):
                raise
            self._cas_sha = None  # Redis restarted and lost its scripts: load again
            res = await self._call(write)
        oks = [bool(x) for x in res]
        # the live set, for the sessions written whose entry's slack is used up (rare: once in
        # LIVE_SLACK of the TTL per session): a write that lost must not bring an id back
        refresh = {rec.id: live_until for rec, ok in zip(records, oks, strict=True) if ok and rec.id in stale}
        if refresh:
            await self._call(lambda: self._r.zadd(LIVE, refresh, gt=True))
        for rec, ok in zip(records, oks, strict=True):
            if ok:
                cached = self._cache.get(rec.id)
                self._remember(rec, live_until if rec.id in refresh else cached[1] if cached else 0.0)
            else:
                self._cache.pop(rec.id, None)
        return oks

    async def delete(self, session_id: str, owner: str | None = None) -> bool:
        self._cache.pop(session_id, None)

        async def go() -> bool:
            async with self._r.pipeline(transaction=False) as p:
                p.delete(key(session_id))
                p.zrem(LIVE, session_id)
                if owner:
                    p.zrem(owned_key(owner), session_id)
                n, *_ = await p.execute()
            return bool(n)

        return bool(await self._call(go))

    async def count(self) -> int:
        async def go() -> int:
            await self._prune()
            return int(await self._r.zcard(LIVE))

        return int(await self._call(go))

    async def _version_ids(self, model: str, version: str) -> list[str]:
        """Live ids of one model version (pruned first), by a ZSCAN of the live set."""
        await self._prune()
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", f"{model}.{version}.") + "*"
        ids = []
        async for member, _ in self._r.zscan_iter(LIVE, match=pattern, count=1000):
            ids.append(member.decode() if isinstance(member, bytes) else str(member))
        return ids

    async def count_version(self, model: str, version: str) -> int:
        return len(await self._call(lambda: self._version_ids(model, version)))

    async def delete_version(self, model: str, version: str) -> int:
        async def go() -> int:
            ids = await self._version_ids(model, version)
            removed = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                records = await self.get_many(chunk)  # for their owners' per-key sets
                async with self._r.pipeline(transaction=False) as p:
                    for i, rec in zip(chunk, records, strict=True):
                        p.zrem(LIVE, i)
                        if rec is not None and rec.owner:
                            p.zrem(owned_key(rec.owner), i)
                    for i in chunk:
                        p.delete(key(i))
                    done = await p.execute()
                removed += sum(int(n) for n in done[-len(chunk) :])
                for i in chunk:  # after the read above, which cached them
                    self._cache.pop(i, None)
            return removed

        return int(await self._call(go))
