"""API keys: records, digests, and the two stores (Redis, and memory for dev mode).

Only a digest of a key's secret is ever stored: HMAC-SHA256 with the server's
pepper when one is configured, plain SHA-256 otherwise. The record's id is
derived from the digest, so a presented key is found with one lookup, and the
full digest is then compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Protocol

from pydantic import BaseModel, Field, field_validator
from redis.asyncio import Redis

from gateway.permissions import Permission
from gateway.redis_guard import RedisGuard

SECRET_PREFIX = "pk-"  # noqa: S105 - a public marker that makes leaked keys greppable


class KeySpec(BaseModel):
    """What an admin sets on a key (create and update)."""

    name: str = Field(min_length=1, max_length=200)
    models: list[str] | None = Field(None, description="Allowed models; None allows all.")
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, gt=0, description="Cap on max_tokens per request.")
    budget_tokens: int | None = Field(None, gt=0, description="Total tokens over the key's life.")
    expires_at: float | None = Field(None, description="Unix time after which the key fails.")
    metadata: dict[str, str] = Field(default_factory=dict)
    permissions: list[Permission] | None = Field(
        None,
        max_length=len(Permission),
        description="Operator permissions (gateway/permissions.py); None: an API key only.",
    )

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 32 or any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
            raise ValueError("at most 32 entries, keys up to 64 and values up to 512 characters")
        return value


class KeyRecord(KeySpec):
    id: str
    digest: str = Field(exclude=True)  # never serialised into API answers
    hint: str = Field(description="The secret's first characters, to recognise it.")
    created_at: float
    revoked_at: float | None = None

    def active(self, now: float) -> bool:
        expired = self.expires_at is not None and now >= self.expires_at
        return self.revoked_at is None and not expired

    def stored(self) -> str:
        return json.dumps({**self.model_dump(), "digest": self.digest})


class KeyHasher:
    def __init__(self, pepper: str | None) -> None:
        self._pepper = pepper.encode() if pepper else None

    def digest(self, secret: str) -> str:
        if self._pepper is not None:
            return hmac.new(self._pepper, secret.encode(), hashlib.sha256).hexdigest()
        return hashlib.sha256(secret.encode()).hexdigest()

    @staticmethod
    def key_id(digest: str) -> str:
        return "key_" + digest[:20]

    def new_record(self, spec: KeySpec) -> tuple[str, KeyRecord]:
        """A fresh secret (returned once, never stored) and its record."""
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        digest = self.digest(secret)
        record = KeyRecord(
            **spec.model_dump(),
            id=self.key_id(digest),
            digest=digest,
            hint=secret[:7],
            created_at=time.time(),
        )
        return secret, record


class KeyStore(Protocol):
    async def put(self, record: KeyRecord) -> None: ...
    async def get(self, key_id: str) -> KeyRecord | None: ...
    async def list(self) -> list[KeyRecord]: ...


class MemoryKeyStore:
    """Dev mode: keys live in this process only and vanish with it."""

    def __init__(self) -> None:
        self._records: dict[str, KeyRecord] = {}

    async def put(self, record: KeyRecord) -> None:
        self._records[record.id] = record

    async def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    async def list(self) -> list[KeyRecord]:
        return sorted(self._records.values(), key=lambda r: r.created_at)


class RedisKeyStore:
    """Keys shared by every replica: ``{prefix}:key:{id}`` holds the JSON record,
    ``{prefix}:keys`` the set of ids. No local cache, so a revocation is seen by
    every replica on its next request."""

    def __init__(self, guard: RedisGuard, prefix: str) -> None:
        self._guard = guard
        self._prefix = prefix

    def _key(self, key_id: str) -> str:
        return f"{self._prefix}:key:{key_id}"

    async def put(self, record: KeyRecord) -> None:
        async def write(redis: Redis) -> None:
            pipe = redis.pipeline(transaction=True)
            pipe.set(self._key(record.id), record.stored())
            pipe.sadd(f"{self._prefix}:keys", record.id)
            await pipe.execute()

        await self._guard.call(write)

    async def get(self, key_id: str) -> KeyRecord | None:
        raw = await self._guard.call(lambda redis: redis.get(self._key(key_id)))
        return None if raw is None else KeyRecord.model_validate_json(raw)

    async def list(self) -> list[KeyRecord]:
        ids = await self._guard.call(lambda redis: redis.smembers(f"{self._prefix}:keys"))
        if not ids:
            return []
        keys = [self._key(i.decode() if isinstance(i, bytes) else i) for i in sorted(ids)]
        raws = await self._guard.call(lambda redis: redis.mget(keys))
        records = [KeyRecord.model_validate_json(r) for r in raws if r is not None]
        return sorted(records, key=lambda r: r.created_at)
