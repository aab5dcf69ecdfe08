"""The batch queue's steps (gateway/batch_backends.py), on the real Redis and in memory,
with a clock the test moves: lines handed out once each while leased, a lease that ends
handed out again, a result kept once, cancel and expiry, and finalizing taken by one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis
from redis.asyncio import Redis

from gateway.batch_backends import (
    BUSY,
    DONE,
    EXPIRED,
    BatchBackend,
    MemoryBatchBackend,
    RedisBatchBackend,
)
from gateway.metrics import Metrics
from gateway.redis_guard import LoopLag, RedisGuard
from gateway.settings import RedisSettings

REDIS_URL = "redis://127.0.0.1:6379/0"
Scenario = Callable[[BatchBackend], Awaitable[None]]


def _run(kind: str, scenario: Scenario) -> None:
    if kind == "memory":
        asyncio.run(scenario(MemoryBatchBackend()))
        return
    prefix = f"test-queue-{uuid.uuid4().hex[:10]}"

    async def with_redis() -> None:
        async with Redis.from_url(REDIS_URL) as client:
            guard = RedisGuard(client, RedisSettings(timeout_s=2.0), Metrics(), LoopLag())
            await scenario(RedisBatchBackend(guard, prefix))

    try:
        asyncio.run(with_redis())
    finally:
        with redis.Redis.from_url(REDIS_URL) as direct:
            keys = list(direct.scan_iter(f"{prefix}:*"))
            if keys:
                direct.delete(*keys)


def _fields(total: int, expires_at: float = 1_000.0) -> dict[str, str]:
    return {
        "meta": "", "status": "in_progress", "created_at": "0", "expires_at": str(expires_at),
        "total": str(total), "next": "0", "completed": "0", "failed": "0",
    }  # fmt: skip


KINDS = ["redis", "memory"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_line_once_while_leased_and_again_when_its_lease_ends(kind: str) -> None:
    async def scenario(queue: BatchBackend) -> None:
        await queue.create("t", "batch_a", _fields(3), active=True)
        assert [await queue.claim("t", "batch_a", 10, 5) for _ in range(4)] == [0, 1, 2, BUSY]
        assert await queue.record("t", "batch_a", 1, b"1one", True)
        # Line 0's worker died: at 16 its lease (to 15) has ended, line 2's renewed one not.
        await queue.hold("t", "batch_a", 2, 30)
        assert await queue.claim("t", "batch_a", 16, 5) == 0
        assert await queue.claim("t", "batch_a", 16, 5) == BUSY
        # Both runs of line 0 finish: the first result is kept, the second not counted.
        assert await queue.record("t", "batch_a", 0, b"1first", True)
        assert not await queue.record("t", "batch_a", 0, b"1second", True)
        assert await queue.record("t", "batch_a", 2, b"0two", False)
        assert await queue.claim("t", "batch_a", 17, 5) == DONE
        assert await queue.results("t", "batch_a") == {0: b"1first", 1: b"1one", 2: b"0two"}
        record = await queue.get("t", "batch_a")
        assert record is not None
        assert (record["completed"], record["failed"]) == ("2", "1")
        # One finalizer at a time; another takes over only when its lease ends.
        assert await queue.finalize("t", "batch_a", 17, 5, "completed") == "completed"
        assert await queue.finalize("t", "batch_a", 18, 5, "completed") is None
        assert await queue.claim("t", "batch_a", 23, 5) == DONE
        assert await queue.finalize("t", "batch_a", 23, 5, "completed") == "completed"
        assert await queue.finish("t", "batch_a", {"status": "completed"}, 60)
        assert await queue.active(10) == []
        assert await queue.results("t", "batch_a") == {}

    _run(kind, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_hands_out_nothing_more_and_expiry_is_reported(kind: str) -> None:
    async def scenario(queue: BatchBackend) -> None:
        await queue.create("t", "batch_c", _fields(5), active=True)
        assert await queue.claim("t", "batch_c", 10, 5) == 0
        assert await queue.cancel("t", "batch_c", 11)
        assert not await queue.cancel("t", "batch_c", 11)  # once
        assert await queue.claim("t", "batch_c", 11, 5) == BUSY  # line 0 still runs
        assert await queue.record("t", "batch_c", 0, b"1zero", True)  # and is kept
        assert await queue.claim("t", "batch_c", 12, 5) == DONE
        assert await queue.finalize("t", "batch_c", 12, 5, "completed") == "cancelled"
        # Another tenant's name for the same id finds nothing.
        assert await queue.get("u", "batch_c") is None
        assert not await queue.cancel("u", "batch_c", 12)

        await queue.create("t", "batch_e", _fields(2, expires_at=50.0), active=True)
        assert await queue.claim("t", "batch_e", 49, 5) == 0
        assert await queue.claim("t", "batch_e", 50, 5) == EXPIRED
        assert await queue.finalize("t", "batch_e", 50, 5, "expired") == "expired"
        assert not await queue.record("t", "batch_e", 0, b"1late", True)  # too late

    _run(kind, scenario)
