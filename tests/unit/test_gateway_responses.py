"""The response store on its own: what a broken, foreign or tampered record comes to,
and what Redis trouble does to a read and to a write."""

from __future__ import annotations

import asyncio
import zlib

import pytest

from gateway.cache import MemoryCacheStore
from gateway.errors import RedisUnavailable
from gateway.metrics import Metrics
from gateway.redis_policy import RedisPolicy
from gateway.responses import ResponseStore
from gateway.sealing import Sealer
from gateway.settings import ResponsesSettings

RECORD = {"input": [{"role": "user", "content": "hi"}], "response": {"id": "resp_1"}}


class DownBackend:
    async def get(self, key: str) -> bytes | None:
        raise RedisUnavailable("ConnectionError")

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        raise RedisUnavailable("ConnectionError")

    async def delete(self, key: str) -> bool:
        raise RedisUnavailable("ConnectionError")


def _store(backend: object, sealer: Sealer | None = None) -> ResponseStore:
    policy = RedisPolicy("open", Metrics())
    return ResponseStore(backend, ResponsesSettings(), 10_000, policy, sealer)  # type: ignore[arg-type]


def test_a_record_is_found_only_by_its_tenant() -> None:
    store = _store(MemoryCacheStore(1_000_000))

    async def run() -> None:
        await store.save("tenant-a", "resp_1", RECORD)
        assert await store.load("tenant-a", "resp_1") == RECORD
        assert await store.load("tenant-b", "resp_1") is None
        assert await store.delete("tenant-b", "resp_1") is False
        assert await store.delete("tenant-a", "resp_1") is True
        assert await store.load("tenant-a", "resp_1") is None

    asyncio.run(run())


def test_a_write_during_redis_trouble_is_skipped_and_a_read_is_a_503() -> None:
    store = _store(DownBackend())

    async def run() -> None:
        await store.save("tenant-a", "resp_1", RECORD)  # the answer was delivered: no raise
        with pytest.raises(RedisUnavailable) as failed:
            await store.load("tenant-a", "resp_1")
        assert failed.value.status_code == 503

    asyncio.run(run())


@pytest.mark.parametrize(
    "stored",
    [
        b"not zlib",
        zlib.compress(b"not json"),
        zlib.compress(b'{"input": "not a list", "response": {}}'),
        zlib.compress(b"[1, 2]"),
        zlib.compress(b'{"input": []' + b" " * 30_000 + b', "response": {}}'),  # over the cap
    ],
)
def test_a_record_that_does_not_decode_is_absent(stored: bytes) -> None:
    backend = MemoryCacheStore(1_000_000)
    store = _store(backend)

    async def run() -> None:
        await store.save("tenant-a", "resp_1", RECORD)
        [key] = list(backend._items)
        await backend.set(key, stored, 60)
        assert await store.load("tenant-a", "resp_1") is None

    asyncio.run(run())


def test_sealed_records_open_only_under_their_key_and_their_name() -> None:
    backend = MemoryCacheStore(1_000_000)
    sealer = Sealer([b"k" * 32])
    sealed = _store(backend, sealer)

    async def run() -> None:
        await sealed.save("tenant-a", "resp_1", RECORD)
        await sealed.save("tenant-a", "resp_2", {**RECORD, "input": []})
        assert await sealed.load("tenant-a", "resp_1") == RECORD
        # Encryption turned off, or another key: absent, never garbage.
        assert await _store(backend).load("tenant-a", "resp_1") is None
        assert await _store(backend, Sealer([b"x" * 32])).load("tenant-a", "resp_1") is None
        # A sealed value copied under another response's name does not open.
        name = {key.rsplit(":", 1)[1]: key for key in backend._items}
        await backend.set(name["resp_2"], backend._items[name["resp_1"]][0], 60)
        assert await sealed.load("tenant-a", "resp_2") is None

    asyncio.run(run())
