"""Signing keys read from a JWKS URL, for :mod:`gateway.jwt_verifier`.

Only RS256 (``kty`` RSA) and ES256 (``kty`` EC, P-256) public keys with a ``kid`` are kept;
anything else in the set is skipped. Fetch failures, httpx errors included, become
:class:`~gateway.errors.AuthenticationFailed` here: they are the token's failure, not a 500,
and not an engine error for :mod:`gateway.upstream` to map.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import httpx
import jwt

from gateway.errors import AuthenticationFailed

_log = logging.getLogger("portico.jwt")


class JWKSCache:
    """The keys at one JWKS URL, refetched when an unknown kid shows up.

    PyJWKClient is not used: it fetches with blocking urllib, which would stall the
    event loop, and with it every request in flight, for as long as the endpoint is slow.
    """

    def __init__(
        self, url: str, client: httpx.AsyncClient, *, min_refresh_s: float, timeout_s: float
    ) -> None:
        self._url = url
        self._client = client
        self._min_refresh_s = min_refresh_s
        self._timeout_s = timeout_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._attempted_at = -math.inf
        # Tokens with unknown kids queue behind one fetch instead of each starting one.
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """The key named ``kid``, or None. An unknown kid refetches the set unless the last
        attempt is under ``min_refresh_s`` old; a failed fetch raises AuthenticationFailed."""
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            due = time.monotonic() - self._attempted_at >= self._min_refresh_s
            if kid not in self._keys and due:
                await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        # Timed from the attempt, not the success, so a failing endpoint is not hammered.
        self._attempted_at = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.get(self._url)
            response.raise_for_status()
            keys = _parse_jwks(response.json())
        except (httpx.HTTPError, TimeoutError, ValueError) as exc:
            # The old keys stay: an outage of the identity provider must not log everyone out.
            _log.warning("JWKS fetch from %s failed: %r", self._url, exc)
            raise AuthenticationFailed(
                "Token signing keys are unavailable; try again later.", code="invalid_token"
            ) from exc
        self._keys = keys


def _parse_jwks(document: object) -> dict[str, jwt.PyJWK]:
    """The usable keys of a JWKS document by kid; ValueError when there are none."""
    entries = document.get("keys") if isinstance(document, dict) else None
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries if isinstance(entries, list) else []:
        jwk = _jwk(entry)
        if jwk is not None:
            keys[entry["kid"]] = jwk
    if not keys:
        raise ValueError("the JWKS holds no usable RS256/ES256 key with a kid")
    return keys


def _jwk(entry: object) -> jwt.PyJWK | None:
    """An RS256 or ES256 signing key, or None for anything else (skipped, not fatal)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
        return None
    kty, crv = entry.get("kty"), entry.get("crv")
    # The algorithm follows the key type; the JWK's own alg and use may only agree with it.
    algorithm = "RS256" if kty == "RSA" else "ES256" if kty == "EC" and crv == "P-256" else None
    if algorithm is None or entry.get("alg", algorithm) != algorithm:
        return None
    # A private key ("d") cannot verify and has no business in a published key set.
    if entry.get("use", "sig") != "sig" or "d" in entry:
        return None
    try:
        return jwt.PyJWK(entry, algorithm)
    except jwt.PyJWTError:
        return None
