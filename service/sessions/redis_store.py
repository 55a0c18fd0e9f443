"""The Redis session store: any replica serves any session; a killed replica loses nothing.

Each session is one hash ``lstm:s:{<id>}`` with fields ``rev`` and ``b`` (the record as
compact bytes, :mod:`service.sessions.codec`), expiring through Redis TTL. Updates are
compare-and-set on ``rev`` in a Lua script that touches that one key, so two replicas can
never both advance a session from the same state, and nothing spans hash slots: the same
code runs on Redis Cluster. A batch costs one pipelined round trip to read its sessions
and one to write them (on a cluster, where pipelines refuse scripts, the writes go out
concurrently instead).

Capacity: live ids sit in a sorted set ``lstm:live`` scored by expiry time. Creation
prunes expired entries (counting them as expired) and refuses at ``max_sessions``. The
set is updated beside each write, not atomically with it; across replicas capacity can
overshoot by the number of concurrent creations.

Faults: any Redis error becomes :class:`StoreUnavailable` (503, nothing changed).
Connections are re-established by the client on the next call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from service.errors import CapacityExceeded, StoreUnavailable
from service.sessions import codec
from service.sessions.record import SessionRecord

CAS = """
local rev = redis.call('HGET', KEYS[1], 'rev')
if (not rev) or tonumber(rev) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'b', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
LIVE = "lstm:live"


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
        on_expire: Callable[[int], None] | None = None,
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.clock: Callable[[], float] = time.time
        self.cluster = cluster
        self.timeout_s = timeout_s
        self._on_expire = on_expire or (lambda n: None)
        self._r: Any = None
        self._cas_sha: str | None = None
        self._script: Any = None

    async def start(self) -> None:
        t = self.timeout_s
        if self.cluster:
            from redis.asyncio.cluster import RedisCluster

            self._r = RedisCluster.from_url(self.url, socket_timeout=t, socket_connect_timeout=t)
        else:
            from redis.asyncio import Redis

            self._r = Redis.from_url(self.url, socket_timeout=t, socket_connect_timeout=t)

    async def close(self) -> None:
        if self._r is not None:
            await self._r.aclose()

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
            async with self._r.pipeline(transaction=False) as p:
                p.hset(key(record.id), mapping={"rev": record.rev, "b": codec.encode(record)})
                p.pexpire(key(record.id), self._ttl_ms())
                p.zadd(LIVE, {record.id: expiry})
                if owned:
                    p.zadd(owned, {record.id: expiry})
                    p.pexpire(owned, self._ttl_ms())
                await p.execute()

        await self._call(go)

    async def get_many(self, ids: list[str]) -> list[SessionRecord | None]:
        async def go() -> list[Any]:
            async with self._r.pipeline(transaction=False) as p:
                for i in ids:
                    p.hmget(key(i), "rev", "b")
                return await p.execute()

        rows = await self._call(go)
        return [
            None if rev is None or blob is None else codec.decode(i, blob, int(rev))
            for i, (rev, blob) in zip(ids, rows, strict=True)
        ]

    async def commit_many(self, records: list[SessionRecord]) -> list[bool]:
        from redis.exceptions import NoScriptError

        ttl = self._ttl_ms()
        expiry = {rec.id: self.clock() + self.ttl_s for rec in records}

        def cas_args(rec: SessionRecord) -> list[Any]:
            return [rec.rev - 1, rec.rev, codec.encode(rec), ttl]

        async def pipelined() -> list[Any]:
            if self._cas_sha is None:
                self._cas_sha = await self._r.script_load(CAS)
            async with self._r.pipeline(transaction=False) as p:
                for rec in records:
                    p.evalsha(self._cas_sha, 1, key(rec.id), *cas_args(rec))
                p.zadd(LIVE, expiry)
                return (await p.execute())[: len(records)]

        async def clustered() -> list[Any]:
            # cluster pipelines refuse scripts: send them concurrently, one per key's node
            script = self._script or self._r.register_script(CAS)
            self._script = script
            res = await asyncio.gather(*(script(keys=[key(rec.id)], args=cas_args(rec)) for rec in records))
            await self._r.zadd(LIVE, expiry)
            return list(res)

        try:
            res = await self._call(clustered if self.cluster else pipelined)
        except StoreUnavailable as e:
            if not isinstance(e.__cause__, NoScriptError):
                raise
            self._cas_sha = None  # Redis restarted and lost its scripts: load again
            res = await self._call(pipelined)
        return [bool(x) for x in res]

    async def delete(self, session_id: str, owner: str | None = None) -> bool:
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
