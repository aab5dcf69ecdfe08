"""Every Redis call goes through here: a short timeout, a circuit breaker, and
one exception type for callers to apply the failure policy to.

Redis holds keys, limits and usage. When it is slow or gone, requests must not
hang or fail with 500s: each call is bounded by ``timeout_s`` (50 ms by default),
and after ``breaker_failures`` consecutive failures the breaker opens, so calls
fail at once instead of each waiting for a timeout. After ``breaker_reset_s``
one call is let through; its success closes the breaker again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.metrics import Metrics
from gateway.settings import RedisSettings

T = TypeVar("T")
_log = logging.getLogger("portico.redis")


class RedisUnavailable(Exception):
    """Redis did not answer in time, refused, or the breaker is open."""


class RedisGuard:
    def __init__(self, redis: Redis, settings: RedisSettings, metrics: Metrics) -> None:
        self.redis = redis
        self._settings = settings
        self._metrics = metrics
        self._failures = 0
        self._open_until = 0.0

    async def call(self, operation: Callable[[Redis], Awaitable[T]]) -> T:
        now = time.monotonic()
        if self._failures >= self._settings.breaker_failures and now < self._open_until:
            raise RedisUnavailable("circuit open")
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                result = await operation(self.redis)
        except (TimeoutError, RedisError, OSError) as exc:
            self._record_failure(exc)
            raise RedisUnavailable(type(exc).__name__) from exc
        if self._failures:
            _log.warning("redis recovered after %d failed calls", self._failures)
        self._failures = 0
        return result

    def _record_failure(self, exc: BaseException) -> None:
        self._failures += 1
        self._metrics.redis_errors.inc()
        if self._failures >= self._settings.breaker_failures:
            self._open_until = time.monotonic() + self._settings.breaker_reset_s
            if self._failures == self._settings.breaker_failures:
                _log.warning("redis circuit opened: %s", type(exc).__name__)
