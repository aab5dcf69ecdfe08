"""The limiter's Lua scripts run by SHA (EVALSHA); their text is sent only when the
server lacks it (first use, after a restart or SCRIPT FLUSH). On a private
``redis-server``, so its command statistics count only this test's calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis
from redis.asyncio import Redis

from gateway.metrics import Metrics
from gateway.ratelimit import RedisLimiter, Window
from gateway.redis_guard import LoopLag, RedisGuard
from gateway.settings import RedisSettings
from tests.gateway.processes import redis_server


def _calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def test_scripts_run_by_sha_and_survive_a_script_flush(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server, redis.Redis.from_url(server.url) as direct:

        async def scenario() -> list[bool]:
            async with Redis.from_url(server.url) as client:
                guard = RedisGuard(client, RedisSettings(timeout_s=1.0), Metrics(), LoopLag())
                limiter = RedisLimiter(guard, "lua", 60)
                window = Window("rpm", "tenant", 3, 1)
                admitted = []
                for round_ in range(4):
                    if round_ == 2:
                        await client.script_flush()  # as after a Redis restart
                    decision = await limiter.acquire([window], f"r{round_}")
                    admitted.append(decision.admitted)
                await limiter.settle(window, "r0", 1)
                return admitted

        assert asyncio.run(scenario()) == [True, True, True, False]  # the limit held
        # Every call goes by SHA first (4 acquires, 1 settle); the text follows only for
        # the 3 the server did not know: the acquire script's first use and its first use
        # after the flush, and the settle script's first use.
        assert _calls(direct, "evalsha") == 5
        assert _calls(direct, "eval") == 3
