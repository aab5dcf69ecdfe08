"""Every Redis call goes through here: a short timeout, a circuit breaker, and
one exception type for callers to apply the failure policy to.

Redis holds keys, limits, usage and cached answers. When it is slow or gone,
requests must not hang or fail with 500s: each call is bounded by
``timeout_s`` (50 ms by default), and after ``breaker_failures`` consecutive
failures the breaker opens, so calls fail at once instead of each waiting for
a timeout. After ``breaker_reset_s`` one call is let through; its success
closes the breaker again.

The timeout is meant to measure *Redis*, not this process's own queue. Under a
burst the event loop itself lags (hundreds of requests waiting for the CPU),
and a plain wall-clock timeout then fires for answers Redis gave in time,
opens the breaker and, with the fail-open policy, admits requests beyond their
limits. So a call whose deadline passes while the loop was lagging *during the
call* (its own wake-up came late, or the ``LoopLag`` monitor saw the loop stall
since the call began) gets a fresh ``timeout_s`` plus that lag from the moment
it runs again (up to 5 s in all). A lag that ended before the call began does
not count: a dead or frozen Redis on a loop that is calm now fails within
``timeout_s``, even right after a busy moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import RedisUnavailable
from gateway.metrics import Metrics
from gateway.settings import RedisSettings

T = TypeVar("T")
_log = logging.getLogger("portico.redis")
_TICK_S = 0.01
_TICKS_KEPT = 500  # ~5 s of ticks on a calm loop (_MAX_LAG_EXTENSION_S)
_MAX_LAG_EXTENSION_S = 5.0


class LoopLag:
    """How late the event loop has run (seconds), tick by tick."""

    def __init__(self) -> None:
        self._ticks: deque[tuple[float, float]] = deque(maxlen=_TICKS_KEPT)  # (woke at, lag)

    def since(self, moment: float) -> float:
        """The worst lag of the wake-ups after ``moment`` (a ``time.monotonic()`` value)."""
        worst = 0.0
        for woke, lag in reversed(self._ticks):
            if woke < moment:
                break
            worst = max(worst, lag)
        return worst

    async def run(self) -> None:
        """Sleep in short ticks and record how much later than asked each wake-up is."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(_TICK_S)
            now = time.monotonic()
            self._ticks.append((now, now - before - _TICK_S))


class RedisGuard:
    def __init__(
        self, redis: Redis, settings: RedisSettings, metrics: Metrics, lag: LoopLag
    ) -> None:
        self.redis = redis
        self._settings = settings
        self._metrics = metrics
        self._lag = lag
        self._failures = 0
        self._open_until = 0.0

    async def call(self, operation: Callable[[Redis], Awaitable[T]]) -> T:
        now = time.monotonic()
        if self._failures >= self._settings.breaker_failures and now < self._open_until:
            raise RedisUnavailable("circuit open")
        try:
            result = await self._within_deadline(operation)
        except (TimeoutError, RedisError, OSError) as exc:
            self._record_failure(exc)
            raise RedisUnavailable(type(exc).__name__) from exc
        if self._failures:
            _log.warning("redis recovered after %d failed calls", self._failures)
        self._failures = 0
        return result

    async def _within_deadline(self, operation: Callable[[Redis], Awaitable[T]]) -> T:
        started = waiting_since = time.monotonic()
        deadline = started + self._settings.timeout_s
        task = asyncio.ensure_future(operation(self.redis))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
                if done:
                    return task.result()
                # Woken past the deadline on a loop that lagged during this call: the
                # answer may sit unread in the socket, waiting for the loop like
                # everything else. Give it a fresh timeout from now, within a bound.
                now = time.monotonic()
                lag = max(now - deadline, self._lag.since(waiting_since))
                if lag < self._settings.timeout_s / 2 or now >= started + _MAX_LAG_EXTENSION_S:
                    raise TimeoutError
                # The next extension needs a lag after this one: one stall, one extension.
                waiting_since = now
                deadline = min(started + _MAX_LAG_EXTENSION_S, now + self._settings.timeout_s + lag)
        finally:
            if not task.done():
                task.cancel()

    def _record_failure(self, exc: BaseException) -> None:
        self._failures += 1
        self._metrics.redis_errors.inc()
        if self._failures >= self._settings.breaker_failures:
            self._open_until = time.monotonic() + self._settings.breaker_reset_s
            if self._failures == self._settings.breaker_failures:
                _log.warning("redis circuit opened: %s", type(exc).__name__)
