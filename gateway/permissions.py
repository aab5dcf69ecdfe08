"""The operator's permissions: a closed set, carried by keys (``permissions`` on the
record) and by JWTs (the ``permissions`` claim).

    keys:read    list and show keys             GET /admin/keys, GET /admin/keys/{id}
    keys:write   create, update, revoke keys    POST, PATCH, DELETE /admin/keys...
    model_admin  engine operations              /admin/engines..., /admin/models/refresh
    admin        all of the above (and whatever is added later)

The admin token holds ``admin``. A string outside the set grants nothing (a JWT may
carry an identity provider's other permissions); a key record refuses one (400).
Granting is bounded by holding: a caller may give a key only permissions it holds
itself, so ``keys:write`` cannot mint an ``admin`` key.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Permission(StrEnum):
    KEYS_READ = "keys:read"
    KEYS_WRITE = "keys:write"
    MODEL_ADMIN = "model_admin"
    ADMIN = "admin"


def holds(granted: Iterable[str], permission: Permission) -> bool:
    """Whether a holder of ``granted`` has ``permission`` (``admin`` has them all)."""
    held = set(granted)
    return permission in held or Permission.ADMIN in held
