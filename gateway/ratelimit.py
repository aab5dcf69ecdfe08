"""Sliding-window limits (requests and tokens per minute) and token budgets.

Algorithm: a sliding window *log*. Each admitted request is an entry
``(reservation id, time, cost)``; a window's load is the sum of the costs of
entries younger than ``window_s``. A request is admitted only if, for every
window it belongs to, load + cost <= limit; then it is recorded in all of them
at once. For requests the cost is 1; for tokens it is the reservation
(prompt estimate + max_tokens), later *settled* to the real usage. With Redis
the check-and-record is one Lua script, so replicas sharing a Redis admit
exactly ``limit`` requests per window between them, never N x limit.

Redis layout per window (all with a TTL of one window, refreshed on use):
``{p}:rl:{name}:{principal}:z`` (ids by time), ``...:h`` (id -> cost),
``...:t`` (running total).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from gateway.redis_guard import RedisGuard


@dataclass(frozen=True)
class Window:
    name: str  # "rpm", "tpm" or "auth_ip": also the rejection kind
    subject: str  # principal id or client IP
    limit: int
    cost: int


@dataclass(frozen=True)
class WindowState:
    limit: int
    remaining: int
    reset_s: float  # until the oldest entry leaves the window


@dataclass(frozen=True)
class Decision:
    admitted: bool
    states: dict[str, WindowState]
    refused_by: str | None = None
    retry_after_s: int = 0


class Limiter(Protocol):
    async def acquire(self, windows: list[Window], reservation: str) -> Decision: ...
    async def settle(self, window: Window, reservation: str, cost: int) -> None: ...
    async def count(self, window: Window) -> int: ...
    async def charge(self, key_id: str, budget: int | None, tokens: int) -> bool: ...
    async def usage(self, key_id: str) -> int: ...


_ACQUIRE = """
-- Redis's clock, not the callers': replicas on different hosts share one window.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local win, id = tonumber(ARGV[1]), ARGV[2]
local n = #KEYS / 3
local totals, waits = {}, {}
for i = 1, n do
  local z, h, t = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now - win)
  for s = 1, #expired, 1000 do
    local chunk = {unpack(expired, s, math.min(s + 999, #expired))}
    local freed = 0
    for _, a in ipairs(redis.call('HMGET', h, unpack(chunk))) do
      freed = freed + (tonumber(a) or 0)
    end
    redis.call('HDEL', h, unpack(chunk))
    redis.call('DECRBY', t, freed)
  end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now - win)
  totals[i] = tonumber(redis.call('GET', t) or '0')
  local limit, cost = tonumber(ARGV[1+2*i]), tonumber(ARGV[2+2*i])
  -- How long until enough old entries leave the window for this cost to fit.
  local excess, wait = totals[i] + cost - limit, 0
  if excess > 0 then
    wait = win
    local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    for e = 1, #entries, 2 do
      excess = excess - (tonumber(redis.call('HGET', h, entries[e])) or 0)
      if excess <= 0 then wait = tonumber(entries[e+1]) + win - now break end
    end
  else
    local oldest = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
    if oldest[2] then wait = tonumber(oldest[2]) + win - now end
  end
  waits[i] = wait
end
-- A window with cost 0 (a cache hit's tokens) is only read: never refused, never recorded.
local refused = 0
for i = 1, n do
  local cost = tonumber(ARGV[2+2*i])
  if cost > 0 and totals[i] + cost > tonumber(ARGV[1+2*i]) then refused = i break end
end
if refused == 0 then
  for i = 1, n do
    local z, h, t, cost = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i], tonumber(ARGV[2+2*i])
    if cost > 0 then
      redis.call('ZADD', z, now, id)
      redis.call('HSET', h, id, cost)
      totals[i] = redis.call('INCRBY', t, cost)
      redis.call('PEXPIRE', z, win) redis.call('PEXPIRE', h, win) redis.call('PEXPIRE', t, win)
    end
    if waits[i] == 0 then waits[i] = win end
  end
end
local out = {refused}
for i = 1, n do out[#out+1] = totals[i] out[#out+1] = math.floor(waits[i]) end
return out
"""

_SETTLE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]) - tonumber(old))
return 1
"""

_CHARGE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local budget, tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
if budget >= 0 and tokens > 0 and used + tokens > budget then return 0 end
redis.call('INCRBY', KEYS[1], tokens)
return 1
"""


def _decision(windows: list[Window], refused: int, pairs: list[tuple[int, float]]) -> Decision:
    states = {
        w.name: WindowState(w.limit, max(0, w.limit - total), wait_ms / 1000)
        for w, (total, wait_ms) in zip(windows, pairs, strict=True)
    }
    if refused == 0:
        return Decision(True, states)
    failed = windows[refused - 1]
    retry = max(1, math.ceil(states[failed.name].reset_s))
    return Decision(False, states, refused_by=failed.name, retry_after_s=retry)


class LuaScript:
    """A Lua script run by its SHA1 (EVALSHA): the text (1-2 KB) is sent only when the
    server does not have it yet (after a restart or SCRIPT FLUSH), through EVAL, which
    also caches it. Spares the wire and the server's hashing of the text on every call
    (no difference measurable in the overhead benchmark, whose cost is client-side)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def run(
        self, redis: Redis, keys: Sequence[str], args: Sequence[str | int | bytes | float]
    ) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.text, len(keys), *keys, *args)


# By SHA1 they are what MONITOR and SLOWLOG show (EVALSHA <sha>) and what tests match.
ACQUIRE_SCRIPT = LuaScript(_ACQUIRE)
SETTLE_SCRIPT = LuaScript(_SETTLE)
CHARGE_SCRIPT = LuaScript(_CHARGE)


class RedisLimiter:
    def __init__(self, guard: RedisGuard, prefix: str, window_s: float) -> None:
        self._guard = guard
        self._prefix = prefix
        self._window_ms = int(window_s * 1000)

    def _keys(self, window: Window) -> list[str]:
        base = f"{self._prefix}:rl:{window.name}:{window.subject}"
        return [base + ":z", base + ":h", base + ":t"]

    async def acquire(self, windows: list[Window], reservation: str) -> Decision:
        keys = [k for w in windows for k in self._keys(w)]
        args: list[str | int] = [self._window_ms, reservation]
        for w in windows:
            args += [w.limit, w.cost]

        async def run(redis: Redis) -> list[int]:
            result: list[int] = await ACQUIRE_SCRIPT.run(redis, keys, args)
            return result

        out = await self._guard.call(run)
        pairs = [(int(out[1 + 2 * i]), float(out[2 + 2 * i])) for i in range(len(windows))]
        return _decision(windows, int(out[0]), pairs)

    async def settle(self, window: Window, reservation: str, cost: int) -> None:
        _, h, t = self._keys(window)

        async def run(redis: Redis) -> None:
            await SETTLE_SCRIPT.run(redis, [h, t], [reservation, cost])

        await self._guard.call(run)

    async def count(self, window: Window) -> int:
        z, _, _ = self._keys(window)
        since = int(time.time() * 1000) - self._window_ms

        async def run(redis: Redis) -> int:
            return int(await redis.zcount(z, since, "+inf"))

        return await self._guard.call(run)

    async def charge(self, key_id: str, budget: int | None, tokens: int) -> bool:
        key = f"{self._prefix}:usage:{key_id}"

        async def run(redis: Redis) -> bool:
            allowed = await CHARGE_SCRIPT.run(
                redis, [key], [-1 if budget is None else budget, tokens]
            )
            return bool(allowed)

        return await self._guard.call(run)

    async def usage(self, key_id: str) -> int:
        raw = await self._guard.call(lambda redis: redis.get(f"{self._prefix}:usage:{key_id}"))
        return int(raw or 0)


class MemoryLimiter:
    """The same algorithm for one process (dev mode, no Redis)."""

    def __init__(self, window_s: float) -> None:
        self._window = window_s
        self._logs: dict[tuple[str, str], OrderedDict[str, tuple[float, int]]] = {}
        self._usage: dict[str, int] = {}

    def _log(self, window: Window, now: float) -> OrderedDict[str, tuple[float, int]]:
        """The window's live entries; subjects with none are dropped (bounded memory)."""
        key = (window.name, window.subject)
        log = self._logs.get(key, OrderedDict())
        while log and next(iter(log.values()))[0] <= now - self._window:
            log.popitem(last=False)
        if not log:
            self._logs.pop(key, None)
        return log

    def _wait(self, log: OrderedDict[str, tuple[float, int]], excess: int, now: float) -> float:
        if excess <= 0:
            first = next(iter(log.values()), None)
            return 0.0 if first is None else first[0] + self._window - now
        for at, cost in log.values():
            excess -= cost
            if excess <= 0:
                return at + self._window - now
        return self._window

    async def acquire(self, windows: list[Window], reservation: str) -> Decision:
        now = time.time()
        logs = [self._log(w, now) for w in windows]
        totals = [sum(c for _, c in log.values()) for log in logs]
        waits = [
            self._wait(log, t + w.cost - w.limit, now)
            for log, t, w in zip(logs, totals, windows, strict=True)
        ]
        refused = next(
            (i + 1 for i, w in enumerate(windows) if w.cost > 0 and totals[i] + w.cost > w.limit),
            0,
        )
        if refused == 0:
            for i, (log, w) in enumerate(zip(logs, windows, strict=True)):
                if w.cost > 0:  # cost 0 (a cache hit's tokens) is only read
                    log[reservation] = (now, w.cost)
                    self._logs[(w.name, w.subject)] = log
                    totals[i] += w.cost
                waits[i] = waits[i] or self._window
        pairs = [(t, wait * 1000) for t, wait in zip(totals, waits, strict=True)]
        return _decision(windows, refused, pairs)

    async def settle(self, window: Window, reservation: str, cost: int) -> None:
        log = self._logs.get((window.name, window.subject))
        if log is not None and reservation in log:
            log[reservation] = (log[reservation][0], cost)

    async def count(self, window: Window) -> int:
        return len(self._log(window, time.time()))

    async def charge(self, key_id: str, budget: int | None, tokens: int) -> bool:
        used = self._usage.get(key_id, 0)
        if budget is not None and tokens > 0 and used + tokens > budget:
            return False
        self._usage[key_id] = used + tokens
        return True

    async def usage(self, key_id: str) -> int:
        return self._usage.get(key_id, 0)
