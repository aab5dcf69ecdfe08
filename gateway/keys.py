"""API keys: records, digests, and the two stores (Redis, and memory for dev mode).

Only a digest of a key's secret is ever stored: HMAC-SHA256 with the server's
pepper when one is configured, plain SHA-256 otherwise. The record's id is
derived from the digest, so a presented key is found with one lookup, and the
full digest is then compared in constant time.

With encryption keys configured, a record's ``name`` and ``metadata`` (tenants
fill them with customer names) are sealed at rest (:mod:`gateway.sealing`);
the id, digest, limits and timestamps stay in clear, as lookups and limits need
them. A record whose name and metadata do not open under the configured keys
still authenticates with its limits intact: it reads as ``metadata_unavailable``,
and writing it back (a revocation) keeps the sealed value it was read with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any, Protocol

from pydantic import BaseModel, Field, PrivateAttr, field_validator
from redis.asyncio import Redis

from gateway.permissions import Permission
from gateway.redis_guard import RedisGuard
from gateway.sealing import Sealer

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
    metadata_unavailable: bool = Field(
        False,
        description="The name and metadata are encrypted under a key this gateway does not "
        "hold (docs/limits.md); the limits still apply.",
    )
    _sealed: str | None = PrivateAttr(None)  # the unopened name and metadata, as read

    def active(self, now: float) -> bool:
        expired = self.expires_at is not None and now >= self.expires_at
        return self.revoked_at is None and not expired

    def stored_fields(self) -> dict[str, Any]:
        """What is written to the store (the digest included), before any sealing."""
        return {**self.model_dump(exclude={"metadata_unavailable"}), "digest": self.digest}


UNAVAILABLE_NAME = "[unavailable]"
_PRIVATE = ("name", "metadata")


class RecordSealer:
    """A record to and from its stored JSON, its name and metadata sealed when
    encryption keys are configured (None: stored in clear)."""

    def __init__(self, sealer: Sealer | None) -> None:
        self._sealer = sealer

    def dumps(self, record: KeyRecord) -> str:
        fields = record.stored_fields()
        untouched = fields["name"] == UNAVAILABLE_NAME and not fields["metadata"]
        if record.metadata_unavailable and untouched and record._sealed is not None:
            return json.dumps({**_public(fields), "sealed": record._sealed})
        if self._sealer is None:
            return json.dumps(fields)
        private = json.dumps({k: fields[k] for k in _PRIVATE}).encode()
        sealed = self._sealer.seal(private, _context(record.id))
        return json.dumps({**_public(fields), "sealed": base64.b64encode(sealed).decode()})

    def loads(self, raw: str | bytes) -> KeyRecord:
        fields = json.loads(raw)
        sealed = fields.pop("sealed", None)
        if sealed is None:
            return KeyRecord.model_validate(fields)  # written in clear
        opened = None
        if self._sealer is not None:
            opened = self._sealer.open(base64.b64decode(sealed), _context(str(fields["id"])))
        if opened is not None:
            return KeyRecord.model_validate({**fields, **json.loads(opened)})
        unavailable = {"name": UNAVAILABLE_NAME, "metadata": {}, "metadata_unavailable": True}
        record = KeyRecord.model_validate({**fields, **unavailable})
        record._sealed = sealed
        return record


def _public(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k not in _PRIVATE}


def _context(key_id: str) -> bytes:
    return b"key:" + key_id.encode()


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

    def __init__(self, guard: RedisGuard, prefix: str, sealer: Sealer | None = None) -> None:
        self._guard = guard
        self._prefix = prefix
        self._records = RecordSealer(sealer)

    def _key(self, key_id: str) -> str:
        return f"{self._prefix}:key:{key_id}"

    async def put(self, record: KeyRecord) -> None:
        async def write(redis: Redis) -> None:
            pipe = redis.pipeline(transaction=True)
            pipe.set(self._key(record.id), self._records.dumps(record))
            pipe.sadd(f"{self._prefix}:keys", record.id)
            await pipe.execute()

        await self._guard.call(write)

    async def get(self, key_id: str) -> KeyRecord | None:
        raw = await self._guard.call(lambda redis: redis.get(self._key(key_id)))
        return None if raw is None else self._records.loads(raw)

    async def list(self) -> list[KeyRecord]:
        ids = await self._guard.call(lambda redis: redis.smembers(f"{self._prefix}:keys"))
        if not ids:
            return []
        keys = [self._key(i.decode() if isinstance(i, bytes) else i) for i in sorted(ids)]
        raws = await self._guard.call(lambda redis: redis.mget(keys))
        records = [self._records.loads(r) for r in raws if r is not None]
        return sorted(records, key=lambda r: r.created_at)
