"""API-key authentication.

Keys are configured in settings and kept only as SHA-256 digests once the app
is built. A presented key is hashed and compared against every stored digest
with ``secrets.compare_digest``, so timing does not reveal how close a guess was.
Accepted as ``Authorization: Bearer <key>`` (what the OpenAI SDK sends) or
``X-API-Key``; never from the URL.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.errors import AuthenticationFailed


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``key_id`` is a short digest prefix, safe to log."""

    key_id: str


ANONYMOUS = Principal(key_id="anonymous")


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class KeyRing:
    def __init__(self, secrets_: Iterable[str], open_access: bool) -> None:
        self._digests = [digest(s) for s in secrets_]
        self._open = open_access and not self._digests

    def authenticate(self, authorization: str | None, x_api_key: str | None) -> Principal:
        if self._open:
            return ANONYMOUS
        presented = _bearer(authorization) or x_api_key
        if not presented:
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'.",
                code="missing_api_key",
            )
        candidate = digest(presented)
        matched = None
        for stored in self._digests:  # no early exit: constant work per request
            if secrets.compare_digest(candidate, stored):
                matched = stored
        if matched is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return Principal(key_id=matched.hex()[:12])


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
