"""ResponseCache.begin -> Hit | Ticket: the cache's single-flight seam, without HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.cache import Hit, MemoryCacheStore, ResponseCache, Ticket
from gateway.cache_key import BYPASS, CachePlan
from gateway.errors import BackendUnavailable, RedisUnavailable
from gateway.metrics import Metrics
from gateway.redis_policy import RedisPolicy
from gateway.replay import entry_from_body
from gateway.settings import CacheSettings

PLAN = CachePlan(key="k", read=True, write=True, ttl_s=60)
_BODY = b'{"id":"cmpl-1","choices":[{"index":0,"text":"ok","finish_reason":"stop"}]}'
ENTRY = entry_from_body(_BODY)


def _cache(**settings: Any) -> ResponseCache:
    return ResponseCache(MemoryCacheStore(1 << 20), CacheSettings(**settings), Metrics())


def test_duplicates_wait_for_the_leader_and_get_its_answer_without_a_store_read() -> None:
    async def scenario() -> list[Hit | Ticket]:
        cache = _cache()
        leader = await cache.begin(PLAN)
        assert isinstance(leader, Ticket)
        assert leader.result == "miss"
        followers = [asyncio.create_task(cache.begin(PLAN)) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert not any(f.done() for f in followers)  # they wait for the leader
        await leader.finish(ENTRY)
        await leader.finish(None)  # a second finish changes nothing
        return list(await asyncio.gather(*followers))

    results = asyncio.run(scenario())
    assert all(isinstance(r, Hit) and r.entry == ENTRY for r in results)


def test_a_leader_without_an_answer_releases_its_followers_to_go_themselves() -> None:
    async def scenario() -> list[Hit | Ticket]:
        cache = _cache()
        leader = await cache.begin(PLAN)
        assert isinstance(leader, Ticket)
        followers = [asyncio.create_task(cache.begin(PLAN)) for _ in range(2)]
        await asyncio.sleep(0.01)
        await leader.finish(None)  # failed: nothing stored, nothing handed over
        return list(await asyncio.gather(*followers))

    results = asyncio.run(scenario())
    assert all(isinstance(r, Ticket) for r in results)


def test_a_follower_waits_at_most_merge_wait_s() -> None:
    async def scenario() -> Hit | Ticket:
        cache = _cache(merge_wait_s=0.05)
        leader = await cache.begin(PLAN)
        assert isinstance(leader, Ticket)
        follower = await asyncio.wait_for(cache.begin(PLAN), 1)
        await leader.finish(None)
        return follower

    assert isinstance(asyncio.run(scenario()), Ticket)


def test_the_leaders_answer_is_stored_for_later_requests() -> None:
    async def scenario() -> Hit | Ticket:
        cache = _cache()
        leader = await cache.begin(PLAN)
        assert isinstance(leader, Ticket)
        await leader.finish(ENTRY)
        return await cache.begin(PLAN)

    later = asyncio.run(scenario())
    assert isinstance(later, Hit)
    assert later.entry == ENTRY


def test_a_bypass_ticket_neither_reads_nor_stores() -> None:
    async def scenario() -> tuple[Hit | Ticket, dict[str, Any] | None]:
        cache = _cache()
        ticket = await cache.begin(BYPASS)
        assert isinstance(ticket, Ticket)
        assert ticket.recorder() is None
        await ticket.finish(ENTRY)
        return ticket, await cache.lookup("k")

    ticket, stored = asyncio.run(scenario())
    assert isinstance(ticket, Ticket)
    assert ticket.result == "bypass"
    assert stored is None


def test_the_redis_policy_fails_limits_closed_or_open_and_keys_fall_back_only_when_open() -> None:
    down = RedisUnavailable("TimeoutError")
    metrics = Metrics()
    closed, opened = RedisPolicy("closed", metrics), RedisPolicy("open", metrics)
    with pytest.raises(BackendUnavailable) as refused:
        closed.limits_unchecked(down)
    assert refused.value.status_code == 503
    assert refused.value.headers["retry-after"] == "1"
    opened.limits_unchecked(down)  # admitted, counted
    assert opened.key_fallback(down, "record") == "record"
    for policy, recent in ((closed, "record"), (opened, None)):
        with pytest.raises(RedisUnavailable) as no_key:
            policy.key_fallback(down, recent)
        assert no_key.value.status_code == 503
        assert "TimeoutError" not in no_key.value.message  # the reason stays in the logs
    assert metrics.redis_fail_open._value.get() == 2
