"""``/admin/keys``: manage API keys. Each route needs a permission
(gateway/permissions.py), checked by gateway/admin_auth.py before a byte of the body
is read; the routes then read and validate their bodies themselves (gateway/body.py),
and gateway/openapi.py documents those bodies from the same models.

A caller gives a key only permissions it holds itself, and changes or revokes only
keys whose permissions it holds: ``keys:write`` cannot mint or disarm an ``admin`` key.

Secrets are returned once, by create; every other answer carries only the
record (id, name, limits, permissions, a short hint of the secret), never the
secret or its digest. The engine operations (gateway/engine_admin.py) share the
``/admin`` router.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from gateway.admin_auth import requires
from gateway.auth import Principal
from gateway.body import parse, read_body
from gateway.engine_admin import engines
from gateway.errors import NotFound, PermissionDenied
from gateway.keys import KeyHasher, KeyRecord, KeySpec, KeyStore
from gateway.permissions import Permission
from gateway.ratelimit import Limiter
from gateway.resources import ResourcesDep

admin = APIRouter(prefix="/admin")


class KeyUpdate(BaseModel):
    """Fields to change; absent fields keep their value."""

    name: str | None = Field(None, min_length=1, max_length=200)
    models: list[str] | None = None
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, gt=0)
    budget_tokens: int | None = Field(None, gt=0)
    expires_at: float | None = None
    metadata: dict[str, str] | None = None
    permissions: list[Permission] | None = Field(None, max_length=len(Permission))


def _within(caller: Principal, permissions: Iterable[Permission] | None, action: str) -> None:
    """Refuse (403) unless ``caller`` holds every one of ``permissions``."""
    missing = sorted(p for p in permissions or () if not caller.holds(p))
    if missing:
        raise PermissionDenied(
            f"You cannot {action} a key with permissions you do not hold: {', '.join(missing)}.",
            param="permissions",
        )


class KeyAdmin:
    """The key-management service behind the routes (plain values in and out)."""

    def __init__(self, store: KeyStore, hasher: KeyHasher, limiter: Limiter) -> None:
        self._store = store
        self._hasher = hasher
        self._limiter = limiter

    async def create(self, spec: KeySpec, caller: Principal) -> dict[str, Any]:
        _within(caller, spec.permissions, "create")
        secret, record = self._hasher.new_record(spec)
        await self._store.put(record)
        return {"key": secret, **record.model_dump()}

    async def list(self) -> list[dict[str, Any]]:
        return [r.model_dump() for r in await self._store.list()]

    async def show(self, key_id: str) -> dict[str, Any]:
        record = await self._get(key_id)
        return {**record.model_dump(), "usage_tokens": await self._limiter.usage(key_id)}

    async def update(self, key_id: str, update: KeyUpdate, caller: Principal) -> dict[str, Any]:
        record = await self._get(key_id)
        _within(caller, record.permissions, "change")
        _within(caller, update.permissions, "grant")
        changed = record.model_copy(update=update.model_dump(exclude_unset=True))
        KeySpec.model_validate(changed.model_dump())  # the merged record must still be valid
        await self._store.put(changed)
        return changed.model_dump()

    async def revoke(self, key_id: str, caller: Principal) -> dict[str, Any]:
        record = await self._get(key_id)
        _within(caller, record.permissions, "revoke")
        if record.revoked_at is None:
            record = record.model_copy(update={"revoked_at": time.time()})
            await self._store.put(record)
        return record.model_dump()

    async def _get(self, key_id: str) -> KeyRecord:
        record = await self._store.get(key_id) if key_id.startswith("key_") else None
        if record is None:
            raise NotFound(f"No key with id '{key_id[:64]}'.", code="key_not_found")
        return record


async def key_admin(resources: ResourcesDep) -> KeyAdmin:
    return KeyAdmin(resources.keys, resources.hasher, resources.limiter)


KeysDep = Annotated[KeyAdmin, Depends(key_admin)]
Reader = Annotated[Principal, requires(Permission.KEYS_READ)]
Writer = Annotated[Principal, requires(Permission.KEYS_WRITE)]


@admin.post("/keys", status_code=201)
async def create_key(request: Request, caller: Writer, keys: KeysDep) -> dict[str, Any]:
    return await keys.create(parse(KeySpec, await read_body(request)), caller)


@admin.get("/keys")
async def list_keys(_: Reader, keys: KeysDep) -> dict[str, Any]:
    return {"object": "list", "data": await keys.list()}


@admin.get("/keys/{key_id}")
async def show_key(key_id: str, _: Reader, keys: KeysDep) -> dict[str, Any]:
    return await keys.show(key_id)


@admin.patch("/keys/{key_id}")
async def update_key(
    key_id: str, request: Request, caller: Writer, keys: KeysDep
) -> dict[str, Any]:
    return await keys.update(key_id, parse(KeyUpdate, await read_body(request)), caller)


@admin.delete("/keys/{key_id}")
async def revoke_key(key_id: str, caller: Writer, keys: KeysDep) -> dict[str, Any]:
    return await keys.revoke(key_id, caller)


admin.include_router(engines)
