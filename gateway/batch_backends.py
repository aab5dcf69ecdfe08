"""Where batches live while they run: Redis (every replica runs every batch) or this
process's memory (no Redis: one process).

A batch is a record (a hash of string fields: its status, counts, timestamps, the
sealed batch object) plus two structures its workers share:

- ``leases``: the lines being run, each scored by when its lease ends. A worker
  renews its lease while the line runs; a lease that ends (its worker died, or it
  postponed the line after a 429 or 503) makes the line claimable again. So a line
  is handed out again only when nobody holds it.
- ``results``: each finished line's result, written only if no result is there yet
  (HSETNX). A line run twice (a lease that ended under a slow worker) is recorded
  once: every ``custom_id`` appears exactly once in the output.

Lines are handed out in order by a counter (``next``); a claim takes an ended lease
first, then the next line. Every step is one Lua script, so replicas never see half
a step. Redis layout, under ``<prefix>:``:

- ``batch:<tenant>:{<batch id>}`` (record), ``...:leases``, ``...:results``: one
  batch's keys share the hash tag of its id (one slot in Redis Cluster);
- ``batches:<tenant>``: the tenant's batch ids scored by creation (listing);
- ``batches:active``: ``<tenant>:<batch id>`` of every batch that is not finished
  (what the workers scan).

An active batch's keys have no Redis TTL (the chart's Redis evicts keys with one);
a finished batch's record gets the files' lifetime, its leases and results go.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from redis.asyncio import Redis

from gateway.ratelimit import LuaScript
from gateway.redis_guard import RedisGuard

# What a claim answers when it hands out no line.
NOT_RUNNING, BUSY, DONE, EXPIRED = -1, -2, -3, -4

# KEYS: record, leases. ARGV: now, lease seconds. A line number, or one of the codes.
_CLAIM = """
local st = redis.call('HMGET', KEYS[1], 'status', 'next', 'total', 'expires_at',
                      'finalize_until')
local status, now = st[1], tonumber(ARGV[1])
if not status then return -1 end
if status == 'finalizing' then
  if tonumber(st[5] or '0') < now then return -3 end
  return -1
end
if status ~= 'in_progress' and status ~= 'cancelling' then return -1 end
if tonumber(st[4]) <= now then return -4 end
if status == 'cancelling' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) == 0 then return -3 end
  return -2
end
local until_ = now + tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)
if due[1] then
  redis.call('ZADD', KEYS[2], until_, due[1])
  return tonumber(due[1])
end
local line = tonumber(st[2])
if line < tonumber(st[3]) then
  redis.call('HINCRBY', KEYS[1], 'next', 1)
  redis.call('ZADD', KEYS[2], until_, line)
  return line
end
if redis.call('ZCARD', KEYS[2]) == 0 then return -3 end
return -2
"""
# KEYS: record, leases, results. ARGV: line, result, counter. 1 if this result counts.
_RECORD = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'in_progress' and status ~= 'cancelling' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
return 1
"""
# KEYS: record. ARGV: now, lease seconds, outcome. The outcome this finalizer
# produces, or nil when another holds the batch or it is finished.
_FINALIZE = """
local st = redis.call('HMGET', KEYS[1], 'status', 'finalize_until', 'outcome')
local status, now = st[1], tonumber(ARGV[1])
local outcome = ARGV[3]
if status == 'finalizing' then
  if tonumber(st[2] or '0') >= now then return false end
  outcome = st[3]
elseif status == 'cancelling' then
  outcome = 'cancelled'
elseif status ~= 'in_progress' then
  return false
end
redis.call('HSET', KEYS[1], 'status', 'finalizing', 'outcome', outcome,
           'finalize_until', now + tonumber(ARGV[2]))
redis.call('HSETNX', KEYS[1], 'finalizing_at', math.floor(now))
return outcome
"""
# KEYS: record, leases, results. ARGV: keep seconds, then field/value pairs. 1 if
# this call finished the batch.
_FINISH = """
if redis.call('HGET', KEYS[1], 'status') ~= 'finalizing' then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HDEL', KEYS[1], 'finalize_until', 'outcome')
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
# KEYS: record. ARGV: now. 1 if the batch was running and is now cancelling.
_CANCEL = """
if redis.call('HGET', KEYS[1], 'status') ~= 'in_progress' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'cancelling', 'cancelling_at', ARGV[1])
return 1
"""
CLAIM_SCRIPT = LuaScript(_CLAIM)
RECORD_SCRIPT = LuaScript(_RECORD)
FINALIZE_SCRIPT = LuaScript(_FINALIZE)
FINISH_SCRIPT = LuaScript(_FINISH)
CANCEL_SCRIPT = LuaScript(_CANCEL)

Record = dict[str, str]  # a batch record's fields, decoded


class BatchBackend(Protocol):
    async def create(self, tenant: str, batch_id: str, fields: Record, active: bool) -> None:
        """Store a new batch record; ``active``: its lines are to be run."""

    async def get(self, tenant: str, batch_id: str) -> Record | None: ...

    async def get_many(self, tenant: str, batch_ids: list[str]) -> list[Record | None]: ...

    async def page(self, tenant: str, after: str | None, limit: int) -> tuple[list[str], bool]:
        """Up to ``limit`` ids, newest first, after ``after`` (none if it is unknown)."""

    async def forget(self, tenant: str, batch_ids: list[str]) -> None:
        """Drop ids whose records are gone (a finished batch's record expires) from the
        tenant's listing."""

    async def active(self, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` (tenant, batch id) of unfinished batches, oldest first."""

    async def claim(self, tenant: str, batch_id: str, now: float, lease_s: float) -> int:
        """A line to run (leased until ``now + lease_s``), or a code: NOT_RUNNING, BUSY
        (every line is out), DONE (time to finalize), EXPIRED."""

    async def hold(self, tenant: str, batch_id: str, line: int, until: float) -> None:
        """Move a held line's lease end to ``until`` (renew it, or postpone the line)."""

    async def record(self, tenant: str, batch_id: str, line: int, result: bytes, ok: bool) -> bool:
        """Keep ``line``'s result unless it has one; True if this one counts."""

    async def results(self, tenant: str, batch_id: str) -> dict[int, bytes]: ...

    async def cancel(self, tenant: str, batch_id: str, now: float) -> bool: ...

    async def finalize(
        self, tenant: str, batch_id: str, now: float, lease_s: float, outcome: str
    ) -> str | None:
        """Take the batch for finalizing; the final status to give it, or None when it
        is not this caller's to finalize."""

    async def finish(self, tenant: str, batch_id: str, fields: Record, keep_s: int) -> bool:
        """Give a finalizing batch its final ``fields``: it leaves the active set, its
        leases and results go, its record is kept ``keep_s`` more."""

    async def retire(self, tenant: str, batch_id: str) -> None:
        """Drop a batch from the active set (its record is gone or finished)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class MemoryBatchBackend:
    """One process's batches (no Redis configured); lost when it stops. The same
    steps as the scripts, run without an await in between."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], Record] = {}
        self._leases: dict[tuple[str, str], dict[int, float]] = {}
        self._results: dict[tuple[str, str], dict[int, bytes]] = {}
        self._active: dict[tuple[str, str], None] = {}  # insertion order: oldest first

    async def create(self, tenant: str, batch_id: str, fields: Record, active: bool) -> None:
        key = (tenant, batch_id)
        self._records[key] = dict(fields)
        self._leases[key], self._results[key] = {}, {}
        if active:
            self._active[key] = None

    async def get(self, tenant: str, batch_id: str) -> Record | None:
        record = self._records.get((tenant, batch_id))
        return None if record is None else dict(record)

    async def get_many(self, tenant: str, batch_ids: list[str]) -> list[Record | None]:
        return [await self.get(tenant, batch_id) for batch_id in batch_ids]

    async def page(self, tenant: str, after: str | None, limit: int) -> tuple[list[str], bool]:
        ids = [b for (t, b) in reversed(self._records) if t == tenant]
        start = 0
        if after is not None:
            if after not in ids:
                return [], False
            start = ids.index(after) + 1
        return ids[start : start + limit], start + limit < len(ids)

    async def forget(self, tenant: str, batch_ids: list[str]) -> None:
        for batch_id in batch_ids:
            self._records.pop((tenant, batch_id), None)

    async def active(self, limit: int) -> list[tuple[str, str]]:
        return list(self._active)[:limit]

    async def claim(self, tenant: str, batch_id: str, now: float, lease_s: float) -> int:
        key = (tenant, batch_id)
        record, leases = self._records.get(key), self._leases.get(key, {})
        if record is None:
            return NOT_RUNNING
        status = record["status"]
        if status == "finalizing":
            return DONE if float(record.get("finalize_until", 0)) < now else NOT_RUNNING
        if status not in ("in_progress", "cancelling"):
            return NOT_RUNNING
        if float(record["expires_at"]) <= now:
            return EXPIRED
        if status == "cancelling":
            for line in [line for line, until in leases.items() if until <= now]:
                del leases[line]
            return BUSY if leases else DONE
        due = [line for line, until in leases.items() if until <= now]
        if due:
            leases[min(due)] = now + lease_s
            return min(due)
        line = int(record["next"])
        if line < int(record["total"]):
            record["next"] = str(line + 1)
            leases[line] = now + lease_s
            return line
        return BUSY if leases else DONE

    async def retire(self, tenant: str, batch_id: str) -> None:
        self._active.pop((tenant, batch_id), None)

    async def hold(self, tenant: str, batch_id: str, line: int, until: float) -> None:
        leases = self._leases.get((tenant, batch_id), {})
        if line in leases:
            leases[line] = until

    async def record(self, tenant: str, batch_id: str, line: int, result: bytes, ok: bool) -> bool:
        key = (tenant, batch_id)
        record = self._records.get(key)
        if record is None or record["status"] not in ("in_progress", "cancelling"):
            return False
        self._leases[key].pop(line, None)
        if line in self._results[key]:
            return False
        self._results[key][line] = result
        counter = "completed" if ok else "failed"
        record[counter] = str(int(record.get(counter, "0")) + 1)
        return True

    async def results(self, tenant: str, batch_id: str) -> dict[int, bytes]:
        return dict(self._results.get((tenant, batch_id), {}))

    async def cancel(self, tenant: str, batch_id: str, now: float) -> bool:
        record = self._records.get((tenant, batch_id))
        if record is None or record["status"] != "in_progress":
            return False
        record.update(status="cancelling", cancelling_at=str(int(now)))
        return True

    async def finalize(
        self, tenant: str, batch_id: str, now: float, lease_s: float, outcome: str
    ) -> str | None:
        record = self._records.get((tenant, batch_id))
        if record is None:
            return None
        status = record["status"]
        if status == "finalizing":
            if float(record.get("finalize_until", 0)) >= now:
                return None
            outcome = record["outcome"]
        elif status == "cancelling":
            outcome = "cancelled"
        elif status != "in_progress":
            return None
        record.update(status="finalizing", outcome=outcome, finalize_until=str(now + lease_s))
        record.setdefault("finalizing_at", str(int(now)))
        return outcome

    async def finish(self, tenant: str, batch_id: str, fields: Record, keep_s: int) -> bool:
        key = (tenant, batch_id)
        record = self._records.get(key)
        if record is None or record["status"] != "finalizing":
            return False
        record.update(fields)
        record.pop("finalize_until", None)
        record.pop("outcome", None)
        self._leases.pop(key, None)
        self._results.pop(key, None)
        self._active.pop(key, None)
        # Kept for this process's life: ``keep_s`` is Redis's TTL; one process's
        # memory holds only what its own callers created.
        return True


class RedisBatchBackend:
    """Batches in Redis (see the module docstring for the keys)."""

    def __init__(self, guard: RedisGuard, prefix: str) -> None:
        self._guard = guard
        self._prefix = prefix

    def _keys(self, tenant: str, batch_id: str) -> list[str]:
        record = f"{self._prefix}:batch:{tenant}:{{{batch_id}}}"
        return [record, f"{record}:leases", f"{record}:results"]

    def _index(self, tenant: str) -> str:
        return f"{self._prefix}:batches:{tenant}"

    @property
    def _active_key(self) -> str:
        return f"{self._prefix}:batches:active"

    async def _script(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        async def run(redis: Redis) -> Any:
            return await script.run(redis, keys, args)

        return await self._guard.call(run)

    async def create(self, tenant: str, batch_id: str, fields: Record, active: bool) -> None:
        record = self._keys(tenant, batch_id)[0]
        created = float(fields["created_at"])

        async def write(redis: Redis) -> None:
            pipe = redis.pipeline(transaction=True)
            pipe.hset(record, mapping={k: v for k, v in fields.items()})
            pipe.zadd(self._index(tenant), {batch_id: created})
            if active:
                pipe.zadd(self._active_key, {f"{tenant}:{batch_id}": created})
            await pipe.execute()

        await self._guard.call(write)

    async def get(self, tenant: str, batch_id: str) -> Record | None:
        return (await self.get_many(tenant, [batch_id]))[0]

    async def get_many(self, tenant: str, batch_ids: list[str]) -> list[Record | None]:
        async def read(redis: Redis) -> list[Mapping[Any, Any]]:
            pipe = redis.pipeline(transaction=False)
            for batch_id in batch_ids:
                pipe.hgetall(self._keys(tenant, batch_id)[0])
            return list(await pipe.execute())

        found = await self._guard.call(read) if batch_ids else []
        return [{_text(k): _text(v) for k, v in f.items()} or None for f in found]

    async def page(self, tenant: str, after: str | None, limit: int) -> tuple[list[str], bool]:
        index = self._index(tenant)

        async def window(redis: Redis) -> tuple[list[str], bool]:
            start = 0
            if after is not None:
                rank = await redis.zrevrank(index, after)
                if not isinstance(rank, int):
                    return [], False
                start = rank + 1
            found = await redis.zrange(index, start, start + limit, desc=True)
            ids = [_text(i) for i in found]
            return ids[:limit], len(ids) > limit

        return await self._guard.call(window)

    async def forget(self, tenant: str, batch_ids: list[str]) -> None:
        async def drop(redis: Redis) -> None:
            await redis.zrem(self._index(tenant), *batch_ids)

        if batch_ids:
            await self._guard.call(drop)

    async def active(self, limit: int) -> list[tuple[str, str]]:
        async def read(redis: Redis) -> list[Any]:
            return list(await redis.zrange(self._active_key, 0, limit - 1))

        pairs = [_text(m).split(":", 1) for m in await self._guard.call(read)]
        return [(tenant, batch_id) for tenant, batch_id in pairs]

    async def claim(self, tenant: str, batch_id: str, now: float, lease_s: float) -> int:
        keys = self._keys(tenant, batch_id)[:2]
        return int(await self._script(CLAIM_SCRIPT, keys, [now, lease_s]))

    async def hold(self, tenant: str, batch_id: str, line: int, until: float) -> None:
        leases = self._keys(tenant, batch_id)[1]

        async def move(redis: Redis) -> None:
            await redis.zadd(leases, {str(line): until}, xx=True)

        await self._guard.call(move)

    async def record(self, tenant: str, batch_id: str, line: int, result: bytes, ok: bool) -> bool:
        args = [line, result, "completed" if ok else "failed"]
        return bool(await self._script(RECORD_SCRIPT, self._keys(tenant, batch_id), args))

    async def results(self, tenant: str, batch_id: str) -> dict[int, bytes]:
        key = self._keys(tenant, batch_id)[2]

        async def read(redis: Redis) -> Mapping[Any, Any]:
            return await redis.hgetall(key)

        found = await self._guard.call(read)
        return {int(k): v if isinstance(v, bytes) else str(v).encode() for k, v in found.items()}

    async def cancel(self, tenant: str, batch_id: str, now: float) -> bool:
        keys = self._keys(tenant, batch_id)[:1]
        return bool(await self._script(CANCEL_SCRIPT, keys, [int(now)]))

    async def finalize(
        self, tenant: str, batch_id: str, now: float, lease_s: float, outcome: str
    ) -> str | None:
        keys = self._keys(tenant, batch_id)[:1]
        taken = await self._script(FINALIZE_SCRIPT, keys, [now, lease_s, outcome])
        return None if taken is None else _text(taken)

    async def finish(self, tenant: str, batch_id: str, fields: Record, keep_s: int) -> bool:
        pairs = [part for item in fields.items() for part in item]
        finished = bool(
            await self._script(FINISH_SCRIPT, self._keys(tenant, batch_id), [keep_s, *pairs])
        )

        # Apart from the script, which touches one batch's keys only (one hash slot).
        # If this call is lost, the workers find the batch finished and drop it.
        await self.retire(tenant, batch_id)
        return finished

    async def retire(self, tenant: str, batch_id: str) -> None:
        async def drop(redis: Redis) -> None:
            await redis.zrem(self._active_key, f"{tenant}:{batch_id}")

        await self._guard.call(drop)
