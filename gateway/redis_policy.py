"""What the gateway does when Redis is unavailable: one policy, applied by every caller.

``RedisGuard`` turns every Redis problem into :class:`RedisUnavailable` and
opens its breaker; callers hand that exception here instead of deciding for
themselves. Three kinds of call, three answers:

- **Limits** (admission): the operator's ``PORTICO_REDIS__FAILURE_POLICY``.
  ``closed`` refuses the request with 503 and Retry-After; ``open`` admits it
  without a limit check and counts ``portico_redis_fail_open_total``.
- **Keys** (authentication): under ``open``, a key seen in the last minute keeps
  working from this process's memory (counted the same way); anything else is
  503, never a 401 that would make clients drop a valid key.
- **Best effort** (a cache read or write, settling usage, the per-IP failure
  counter): the request goes on without it, whatever the policy. A broken cache
  is an empty cache; an unsettled reservation ages out with its window.
"""

from __future__ import annotations

import logging
from typing import Literal, TypeVar

from gateway.errors import BackendUnavailable, RedisUnavailable
from gateway.metrics import Metrics

T = TypeVar("T")
_log = logging.getLogger("portico.redis")


class RedisPolicy:
    def __init__(self, mode: Literal["open", "closed"], metrics: Metrics) -> None:
        self.mode = mode
        self._metrics = metrics

    def limits_unchecked(self, exc: RedisUnavailable) -> None:
        """Admission could not check the limits: raise under ``closed``, go on under
        ``open`` (counted)."""
        if self.mode == "closed":
            raise BackendUnavailable(
                "Rate limiter unavailable; retry shortly.", headers={"retry-after": "1"}
            ) from exc
        self._metrics.redis_fail_open.inc()

    def key_fallback(self, exc: RedisUnavailable, recent: T | None) -> T:
        """The key store could not be read: ``recent`` (what this process saw of the key
        lately, None if nothing) under ``open``; otherwise the 503 ``exc`` is."""
        if self.mode == "open" and recent is not None:
            self._metrics.redis_fail_open.inc()
            return recent
        raise exc

    def tolerate(self, exc: RedisUnavailable, what: str) -> None:
        """A best-effort call failed: the request goes on without it."""
        _log.debug("redis unavailable for %s (%s): skipped", what, exc.reason)
