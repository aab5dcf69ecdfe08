"""Who may call the operator API (``/admin``): the admin token from settings, or a
key or JWT holding the route's permission (gateway/permissions.py); anyone else
gets 403 in OpenAI's error shape.

The caller is checked before a byte of the body is read: the admin routes take no
FastAPI body parameter (FastAPI would read the whole body before this dependency
runs) but read and validate it themselves once the check has passed (gateway/body.py).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from gateway import telemetry
from gateway.auth import ADMIN_TOKEN, Principal, presented_key
from gateway.errors import PermissionDenied
from gateway.permissions import Permission
from gateway.resources import Resources, ResourcesDep


async def _caller(resources: Resources, presented: str | None, client_ip: str) -> Principal:
    # Before the token compare: a blocked address must not learn which guess was right
    # (its wrong guesses are counted by authenticate below).
    await resources.auth.check_ip(client_ip)
    token = resources.settings.admin_token
    if presented and token is not None:
        given = hashlib.sha256(presented.encode()).digest()
        wanted = hashlib.sha256(token.get_secret_value().encode()).digest()
        if secrets.compare_digest(given, wanted):
            return ADMIN_TOKEN
    return await resources.auth.authenticate(presented, client_ip)


def requires(permission: Permission) -> Any:
    """A dependency: the caller, authenticated and holding ``permission``; else 401/403."""

    async def guard(
        request: Request,
        resources: ResourcesDep,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Principal:
        client_ip = request.client.host if request.client else "unknown"
        caller = await _caller(resources, presented_key(authorization, None), client_ip)
        telemetry.current().principal = caller.id  # for the access log: an id, never the secret
        if not caller.holds(permission):
            raise PermissionDenied(
                f"This route needs the '{permission}' permission (or 'admin'); "
                "the admin token has every permission."
            )
        return caller

    return Depends(guard)
