"""``/admin``: manage API keys. Authenticated by the admin token from settings
or by a JWT carrying the ``admin`` permission; an ordinary key gets 403.

The caller is checked before a byte of the body is read: the routes take no FastAPI
body parameter (FastAPI would read the whole body before ``require_admin`` runs) but
read and validate it themselves once ``require_admin`` has passed (gateway/body.py).
gateway/openapi.py documents their bodies from the same models.

Secrets are returned once, by create; every other answer carries only the
record (id, name, limits, a short hint of the secret), never the secret or its
digest.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field

from gateway.auth import Principal, presented_key
from gateway.body import parse, read_body
from gateway.errors import NotFound, PermissionDenied
from gateway.keys import KeyHasher, KeyRecord, KeySpec, KeyStore
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


class KeyAdmin:
    """The key-management service behind the routes (plain values in and out)."""

    def __init__(self, store: KeyStore, hasher: KeyHasher, limiter: Limiter) -> None:
        self._store = store
        self._hasher = hasher
        self._limiter = limiter

    async def create(self, spec: KeySpec) -> dict[str, Any]:
        secret, record = self._hasher.new_record(spec)
        await self._store.put(record)
        return {"key": secret, **record.model_dump()}

    async def list(self) -> list[dict[str, Any]]:
        return [r.model_dump() for r in await self._store.list()]

    async def show(self, key_id: str) -> dict[str, Any]:
        record = await self._get(key_id)
        return {**record.model_dump(), "usage_tokens": await self._limiter.usage(key_id)}

    async def update(self, key_id: str, update: KeyUpdate) -> dict[str, Any]:
        record = await self._get(key_id)
        changed = record.model_copy(update=update.model_dump(exclude_unset=True))
        KeySpec.model_validate(changed.model_dump())  # the merged record must still be valid
        await self._store.put(changed)
        return changed.model_dump()

    async def revoke(self, key_id: str) -> dict[str, Any]:
        record = await self._get(key_id)
        if record.revoked_at is None:
            record = record.model_copy(update={"revoked_at": time.time()})
            await self._store.put(record)
        return record.model_dump()

    async def _get(self, key_id: str) -> KeyRecord:
        record = await self._store.get(key_id) if key_id.startswith("key_") else None
        if record is None:
            raise NotFound(f"No key with id '{key_id[:64]}'.", code="key_not_found")
        return record


async def require_admin(
    request: Request,
    resources: ResourcesDep,
    authorization: Annotated[str | None, Header()] = None,
) -> KeyAdmin:
    presented = presented_key(authorization, None)
    client_ip = request.client.host if request.client else "unknown"
    # Before the token compare: a blocked address must not learn which guess was right
    # (its wrong guesses are counted by authenticate below).
    await resources.auth.check_ip(client_ip)
    token = resources.settings.admin_token
    if presented and token is not None:
        given = hashlib.sha256(presented.encode()).digest()
        wanted = hashlib.sha256(token.get_secret_value().encode()).digest()
        if secrets.compare_digest(given, wanted):
            return KeyAdmin(resources.keys, resources.hasher, resources.limiter)
    principal: Principal = await resources.auth.authenticate(presented, client_ip)
    if not principal.is_admin:
        raise PermissionDenied("The admin API needs the admin token or an 'admin' JWT.")
    return KeyAdmin(resources.keys, resources.hasher, resources.limiter)


AdminDep = Annotated[KeyAdmin, Depends(require_admin)]


@admin.post("/keys", status_code=201)
async def create_key(request: Request, keys: AdminDep) -> dict[str, Any]:
    return await keys.create(parse(KeySpec, await read_body(request)))


@admin.get("/keys")
async def list_keys(keys: AdminDep) -> dict[str, Any]:
    return {"object": "list", "data": await keys.list()}


@admin.get("/keys/{key_id}")
async def show_key(key_id: str, keys: AdminDep) -> dict[str, Any]:
    return await keys.show(key_id)


@admin.patch("/keys/{key_id}")
async def update_key(key_id: str, request: Request, keys: AdminDep) -> dict[str, Any]:
    return await keys.update(key_id, parse(KeyUpdate, await read_body(request)))


@admin.delete("/keys/{key_id}")
async def revoke_key(key_id: str, keys: AdminDep) -> dict[str, Any]:
    return await keys.revoke(key_id)
