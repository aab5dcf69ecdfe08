"""Where uploaded files live: Redis (shared by replicas) or this process's memory.

The backends keep opaque bytes (the file object's metadata and the content, already
compressed and sealed by :class:`gateway.files.FileStore`) under a tenant digest,
with three numbers beside them: the file's size, its creation and its expiry.

Redis layout, all under ``<prefix>:files:``:

- ``<tenant>:<file id>``: a hash (``meta``, ``content``, ``bytes``, ``expires_at``);
- ``<tenant>:index``: the tenant's file ids scored by creation time (listing, paging);
- ``<tenant>:bytes``: the bytes the tenant has stored, the quota's count;
- ``bytes``: the bytes all tenants have stored, the store's own cap's count;
- ``expiry``: every file as ``<tenant>:<file id>``, scored by its expiry (the sweep).

No key has a Redis TTL: the chart's Redis evicts keys with one under memory pressure
(volatile-lru), and an input file must not vanish while a batch reads it. Expiry is
the store's own: ``expires_at`` is checked on every read and the sweep deletes. A
store and a delete are each one Lua script, so the byte count moves with the file,
exactly, whatever replicas run at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from gateway.ratelimit import LuaScript
from gateway.redis_guard import RedisGuard

# KEYS: file, index, usage, expiry, total. ARGV: meta, content, size, created,
# expires_at, quota, id, expiry member, total cap. STORED, or TENANT_FULL / STORE_FULL.
_PUT = """
local size = tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
if used + size > tonumber(ARGV[6]) then return -1 end
local total = tonumber(redis.call('GET', KEYS[5]) or '0')
if total + size > tonumber(ARGV[9]) then return -2 end
redis.call('INCRBY', KEYS[5], size)
redis.call('HSET', KEYS[1], 'meta', ARGV[1], 'content', ARGV[2], 'bytes', ARGV[3],
           'expires_at', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[8])
return redis.call('INCRBY', KEYS[3], size)
"""
# KEYS: file, index, usage, expiry, total. ARGV: id, expiry member. 1 if the file was there.
_REMOVE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[2])
local size = redis.call('HGET', KEYS[1], 'bytes')
if not size then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('DECRBY', KEYS[3], size) <= 0 then redis.call('DEL', KEYS[3]) end
if redis.call('DECRBY', KEYS[5], size) <= 0 then redis.call('DEL', KEYS[5]) end
return 1
"""
PUT_SCRIPT = LuaScript(_PUT)
STORED, TENANT_FULL, STORE_FULL = 0, -1, -2
REMOVE_SCRIPT = LuaScript(_REMOVE)


@dataclass(frozen=True)
class Entry:
    """One stored file as a backend holds it: opaque bytes plus its numbers."""

    meta: bytes
    content: bytes
    size: int
    created: float
    expires_at: float


@dataclass(frozen=True)
class Page:
    ids: list[str]
    has_more: bool


class FileBackend(Protocol):
    async def put(self, tenant: str, file_id: str, entry: Entry, quota: int, cap: int) -> int:
        """Store ``entry``: STORED; or nothing stored and TENANT_FULL if the tenant would
        go over ``quota``, STORE_FULL if all tenants together would go over ``cap``."""

    async def get(self, tenant: str, file_id: str, content: bool) -> Entry | None:
        """The entry (its ``content`` empty unless asked for), or None."""

    async def get_many(self, tenant: str, file_ids: list[str]) -> list[Entry | None]:
        """The entries of ``file_ids`` without their content, in one round trip."""

    async def remove(self, tenant: str, file_id: str) -> bool: ...

    async def page(self, tenant: str, after: str | None, limit: int, descending: bool) -> Page:
        """Up to ``limit`` ids by creation time, after ``after`` (none if it is unknown)."""

    async def expired(self, now: float, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` (tenant, file id) pairs whose expiry is ``now`` or earlier."""

    async def usage(self, tenant: str) -> int: ...


def _window(ordered: Sequence[str], after: str | None, limit: int) -> Page:
    start = 0
    if after is not None:
        if after not in ordered:
            return Page([], False)
        start = ordered.index(after) + 1
    return Page(list(ordered[start : start + limit]), start + limit < len(ordered))


def _entry(found: list[Any]) -> Entry | None:
    """An entry from a hash's ``meta``, ``bytes``, ``expires_at`` (and ``content``)."""
    meta, size, expires_at, *body = (v.encode() if isinstance(v, str) else v for v in found)
    if meta is None or size is None or expires_at is None:
        return None
    stored = body[0] if body and body[0] is not None else b""
    return Entry(meta, stored, int(size), 0.0, float(expires_at))


class MemoryFileBackend:
    """One process's files (no Redis configured); lost when it stops."""

    def __init__(self) -> None:
        self._files: dict[str, dict[str, Entry]] = {}  # insertion order is creation order
        self._used: dict[str, int] = {}
        self._total = 0

    async def put(self, tenant: str, file_id: str, entry: Entry, quota: int, cap: int) -> int:
        used = self._used.get(tenant, 0)
        if used + entry.size > quota:
            return TENANT_FULL
        if self._total + entry.size > cap:
            return STORE_FULL
        self._files.setdefault(tenant, {})[file_id] = entry
        self._used[tenant] = used + entry.size
        self._total += entry.size
        return STORED

    async def get(self, tenant: str, file_id: str, content: bool) -> Entry | None:
        return self._files.get(tenant, {}).get(file_id)

    async def get_many(self, tenant: str, file_ids: list[str]) -> list[Entry | None]:
        files = self._files.get(tenant, {})
        return [files.get(file_id) for file_id in file_ids]

    async def remove(self, tenant: str, file_id: str) -> bool:
        entry = self._files.get(tenant, {}).pop(file_id, None)
        if entry is None:
            return False
        self._used[tenant] -= entry.size
        self._total -= entry.size
        if not self._files[tenant]:
            del self._files[tenant], self._used[tenant]
        return True

    async def page(self, tenant: str, after: str | None, limit: int, descending: bool) -> Page:
        ordered = list(self._files.get(tenant, {}))
        return _window(ordered[::-1] if descending else ordered, after, limit)

    async def expired(self, now: float, limit: int) -> list[tuple[str, str]]:
        found = [
            (tenant, file_id)
            for tenant, files in self._files.items()
            for file_id, entry in files.items()
            if entry.expires_at <= now
        ]
        return found[:limit]

    async def usage(self, tenant: str) -> int:
        return self._used.get(tenant, 0)


class RedisFileBackend:
    """Files in Redis (see the module docstring for the keys)."""

    def __init__(self, guard: RedisGuard, prefix: str) -> None:
        self._guard = guard
        self._prefix = f"{prefix}:files:"

    def _keys(self, tenant: str, file_id: str) -> list[str]:
        p = self._prefix
        return [
            f"{p}{tenant}:{file_id}", f"{p}{tenant}:index", f"{p}{tenant}:bytes",
            f"{p}expiry", f"{p}bytes",
        ]  # fmt: skip

    async def put(self, tenant: str, file_id: str, entry: Entry, quota: int, cap: int) -> int:
        args: list[str | int | bytes | float] = [
            entry.meta, entry.content, entry.size, entry.created, entry.expires_at, quota,
            file_id, f"{tenant}:{file_id}", cap,
        ]  # fmt: skip

        async def put(redis: Redis) -> int:
            return int(await PUT_SCRIPT.run(redis, self._keys(tenant, file_id), args))

        stored = await self._guard.call(put)
        return STORED if stored >= 0 else stored

    async def get(self, tenant: str, file_id: str, content: bool) -> Entry | None:
        fields = ["meta", "bytes", "expires_at", *(["content"] if content else [])]
        key = self._keys(tenant, file_id)[0]

        async def read(redis: Redis) -> list[Any]:
            return list(await redis.hmget(key, fields))

        return _entry(await self._guard.call(read))

    async def get_many(self, tenant: str, file_ids: list[str]) -> list[Entry | None]:
        fields = ["meta", "bytes", "expires_at"]

        async def read(redis: Redis) -> list[list[Any]]:
            pipe = redis.pipeline(transaction=False)
            for file_id in file_ids:
                pipe.hmget(self._keys(tenant, file_id)[0], fields)
            return list(await pipe.execute())

        return [_entry(found) for found in await self._guard.call(read)] if file_ids else []

    async def remove(self, tenant: str, file_id: str) -> bool:
        async def remove(redis: Redis) -> bool:
            args = [file_id, f"{tenant}:{file_id}"]
            return bool(await REMOVE_SCRIPT.run(redis, self._keys(tenant, file_id), args))

        return await self._guard.call(remove)

    async def page(self, tenant: str, after: str | None, limit: int, descending: bool) -> Page:
        index = f"{self._prefix}{tenant}:index"

        async def window(redis: Redis) -> Page:
            start = 0
            if after is not None:
                rank = await (redis.zrevrank if descending else redis.zrank)(index, after)
                if not isinstance(rank, int):
                    return Page([], False)
                start = rank + 1
            # One more than asked: whether it exists is has_more.
            found = await redis.zrange(index, start, start + limit, desc=descending)
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in found]
            return Page(ids[:limit], len(ids) > limit)

        return await self._guard.call(window)

    async def expired(self, now: float, limit: int) -> list[tuple[str, str]]:
        async def due(redis: Redis) -> list[str]:
            found = await redis.zrangebyscore(f"{self._prefix}expiry", "-inf", now, 0, limit)
            return [m.decode() if isinstance(m, bytes) else str(m) for m in found]

        pairs = [member.split(":", 1) for member in await self._guard.call(due)]
        return [(tenant, file_id) for tenant, file_id in pairs]

    async def usage(self, tenant: str) -> int:
        async def used(redis: Redis) -> int:
            return int(await redis.get(f"{self._prefix}{tenant}:bytes") or 0)

        return await self._guard.call(used)
