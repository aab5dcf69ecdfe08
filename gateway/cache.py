"""The response cache: Redis (shared by replicas) or an in-process LRU, with
single-flight merging of identical in-flight requests.

A cache problem never fails a request: a Redis error or timeout on read is a
miss, on write the entry is simply not stored; a stored value this version
cannot replay is a miss too. Entries are namespaced by tenant in their key
(see :mod:`gateway.cache_key`), so no tenant can read another's answers. What
an entry holds, and how it is replayed: :mod:`gateway.replay`.

With encryption keys configured, every entry is sealed after compression and
opened before decompression (:mod:`gateway.sealing`), under its cache key as
authenticated data; an entry that does not open (a wrong or dropped key, an
entry written with encryption off, or on when it is now off) is a miss,
counted in ``portico_cache_unreadable_total``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from gateway.cache_key import CachePlan, plan
from gateway.errors import RedisUnavailable
from gateway.metrics import Metrics
from gateway.redis_guard import RedisGuard
from gateway.redis_policy import RedisPolicy
from gateway.replay import StreamRecorder, dump, entry_from_body, load
from gateway.sealing import Sealer, is_sealed
from gateway.settings import CacheSettings

_log = logging.getLogger("portico.cache")


class CacheStore(Protocol):
    """Bytes under string keys with a lifetime: the cache's entries, the stored responses."""

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def delete(self, key: str) -> bool: ...


class MemoryCacheStore:
    """A byte-bounded LRU for one process (no Redis configured)."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._size = 0
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item[0]

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self._drop(key)
        self._items[key] = (value, time.monotonic() + ttl_s)
        self._size += len(value)
        while self._size > self._max and self._items:
            self._drop(next(iter(self._items)))

    async def delete(self, key: str) -> bool:
        return self._drop(key)

    def _drop(self, key: str) -> bool:
        item = self._items.pop(key, None)
        if item is not None:
            self._size -= len(item[0])
        return item is not None and item[1] > time.monotonic()


class RedisCacheStore:
    def __init__(self, guard: RedisGuard, prefix: str, namespace: str = "cache") -> None:
        self._guard = guard
        self._prefix = f"{prefix}:{namespace}:"

    async def get(self, key: str) -> bytes | None:
        async def read(redis: Redis) -> bytes | None:
            raw = await redis.get(self._prefix + key)
            return raw if isinstance(raw, bytes | None) else raw.encode()

        return await self._guard.call(read)

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        async def write(redis: Redis) -> None:
            await redis.set(self._prefix + key, value, ex=ttl_s)

        await self._guard.call(write)

    async def delete(self, key: str) -> bool:
        async def remove(redis: Redis) -> bool:
            return bool(await redis.delete(self._prefix + key))

        return await self._guard.call(remove)


class Flight:
    """One request computing an answer that identical requests wait for. The answer
    is handed over in memory: waiting requests need no cache read to get it."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.entry: dict[str, Any] | None = None


class ResponseCache:
    def __init__(
        self,
        store: CacheStore,
        settings: CacheSettings,
        metrics: Metrics,
        sealer: Sealer | None = None,
        policy: RedisPolicy | None = None,
    ) -> None:
        self._store = store
        # A cache call only ever fails open (a broken cache is an empty cache), so any
        # policy's answer is the same; the app passes its shared one.
        self._policy = policy or RedisPolicy("open", metrics)
        self._sealer = sealer
        self._settings = settings
        self._metrics = metrics
        self._inflight: dict[str, Flight] = {}

    def plan(
        self,
        route: str,
        tenant: str,
        body: bytes,
        stream: bool,
        deterministic: bool,
        cache_control: str | None,
        request_mode: str | None,
    ) -> CachePlan:
        s = self._settings
        return plan(
            route, tenant, body, stream, deterministic, s.mode, cache_control, request_mode,
            s.ttl_s, s.max_ttl_s,
        )  # fmt: skip

    def recorder(self) -> StreamRecorder:
        """Records a stream as it is relayed; holds no more than one entry may."""
        return StreamRecorder(self._settings.max_entry_bytes)

    async def lookup(self, key: str) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            stored = await self._store.get(key)
        except RedisUnavailable as exc:
            self._policy.tolerate(exc, "a cache read")
            return None
        if stored is None:
            return None
        opened = self._open(key, stored)
        if opened is None:
            self._metrics.cache_unreadable.inc()
            return None
        entry = load(self._inflate(opened))
        if entry is None:
            return None
        self._metrics.cache_hit_seconds.observe(time.perf_counter() - started)
        return entry

    def _open(self, key: str, stored: bytes) -> bytes | None:
        """The compressed entry; None if it is sealed and does not open here, or is
        plain while encryption is on (never inflate what was not authenticated)."""
        if self._sealer is None:
            return None if is_sealed(stored) else stored
        return self._sealer.open(stored, b"cache:" + key.encode())

    def _inflate(self, stored: bytes) -> bytes:
        """The entry's bytes; empty (no entry) if they are not what ``store`` wrote,
        or larger than an entry may be."""
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(stored, self._settings.max_entry_bytes + 1)
        except zlib.error:
            return b""
        return raw if inflater.eof and len(raw) <= self._settings.max_entry_bytes else b""

    async def store(self, key: str, entry: dict[str, Any], ttl_s: int) -> None:
        """Store an entry, compressed (a stream's events repeat their id, model and
        usage keys: a 200-token stream is 16x smaller); ``max_entry_bytes`` bounds it
        uncompressed, as the recorder that made it was bounded."""
        raw = dump(entry)
        if len(raw) > self._settings.max_entry_bytes:
            return
        stored = zlib.compress(raw, 1)  # level 1: 6x faster here than 6, ~10% larger
        if self._sealer is not None:
            stored = self._sealer.seal(stored, b"cache:" + key.encode())
        try:
            await self._store.set(key, stored, ttl_s)
        except RedisUnavailable as exc:
            self._policy.tolerate(exc, "a cache write")
            return
        self._metrics.cache_stores.inc()
        self._metrics.cache_stored_bytes.inc(len(stored))

    async def begin(self, plan: CachePlan) -> Hit | Ticket:
        """The stored answer for ``plan`` (or the one an identical request in flight
        hands over), else a ticket the caller must ``finish`` whatever happens: the
        first request of a key leads (its duplicates wait for its answer), the rest of
        a miss goes on without waiting again."""
        key = plan.key
        if key is None or not plan.read:
            return Ticket(self, plan, None)
        entry = await self.lookup(key)
        flight = None
        if entry is None:
            flight = self._lead(key)
            if flight is None:  # an identical request is in flight: wait for its answer
                entry = await self._follow(key)
                flight = self._lead(key) if entry is None else None
        return Hit(entry) if entry is not None else Ticket(self, plan, flight)

    def _lead(self, key: str) -> Flight | None:
        """Become the one request computing ``key``; None if another already is."""
        if key in self._inflight:
            return None
        flight = self._inflight[key] = Flight()
        return flight

    def hand_over(self, key: str, flight: Flight, entry: dict[str, Any] | None) -> None:
        """Hand the answer (None: none usable) to the requests waiting on ``flight``."""
        if self._inflight.get(key) is flight:
            del self._inflight[key]
        flight.entry = entry
        flight.done.set()

    async def _follow(self, key: str) -> dict[str, Any] | None:
        """Wait (bounded) for the request computing ``key``; its answer, if complete."""
        flight = self._inflight.get(key)
        if flight is None:
            return None
        self._metrics.cache_merges.inc()
        try:
            async with asyncio.timeout(self._settings.merge_wait_s):
                await flight.done.wait()
        except TimeoutError:
            return None
        return flight.entry


@dataclass(frozen=True)
class Hit:
    """A stored answer, to be replayed."""

    entry: dict[str, Any]


class Ticket:
    """A request the cache could not answer: what it may store, and the duplicates
    waiting for it. ``finish`` runs once in every outcome (later calls do nothing)."""

    def __init__(self, cache: ResponseCache, plan: CachePlan, flight: Flight | None) -> None:
        self._cache = cache
        self._plan = plan
        self._flight = flight
        self._finished = False
        # x-cache: "miss" when the cache was asked, "bypass" when it may not be.
        self.result = "miss" if plan.key is not None and plan.read else "bypass"

    def recorder(self) -> StreamRecorder | None:
        """Records a relayed stream for storing; None when the answer may not be stored."""
        if not self._plan.write or self._plan.key is None:
            return None
        return self._cache.recorder()

    def relayed(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        """A whole answer goes to the client as the engine sent it; kept if complete."""
        return body, entry_from_body(body)

    async def finish(self, entry: dict[str, Any] | None = None) -> None:
        """Store ``entry`` (a complete answer; None: nothing usable) if the plan allows,
        and hand it to the duplicates waiting for this request."""
        if self._finished:
            return
        self._finished = True
        key = self._plan.key
        try:
            if entry is not None and self._plan.write and key is not None:
                await self._cache.store(key, entry, self._plan.ttl_s)
        finally:
            if self._flight is not None and key is not None:
                self._cache.hand_over(key, self._flight, entry)
