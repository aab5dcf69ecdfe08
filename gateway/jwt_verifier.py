"""JWT bearer verification: signed tokens that name a tenant, its models and its limits.

The token's header ``alg`` picks the key source, and each source is pinned to its own
algorithm, so a token never chooses how it is checked:

    HS256          -> the shared ``secret``, and nothing else
    RS256 / ES256  -> the JWKS key named by ``kid``, else the PEM ``public_key``;
                      a key verifies only the algorithm of its own type
    anything else  -> refused (``none`` included)

Keys come from configuration only: the ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are
never read. Every failure, a JWKS endpoint that is down included (see :mod:`gateway.jwks`),
is an :class:`~gateway.errors.AuthenticationFailed` with code ``invalid_token``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt.exceptions import InvalidSubjectError

from gateway.errors import AuthenticationFailed
from gateway.jwks import JWKSCache
from gateway.jwt_keys import load_public_key
from gateway.settings import JWTSettings

# 9999-12-31T23:59:59Z: keeps 'exp' within float range and any sane calendar.
_MAX_EXP = 253_402_300_799
_ASYMMETRIC = frozenset({"RS256", "ES256"})
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class JWTClaims:
    """What a verified token grants. ``models`` None means every model."""

    subject: str
    models: frozenset[str] | None
    permissions: frozenset[str]
    rpm: int | None
    tpm: int | None
    expires_at: float


def looks_like_jwt(token: str) -> bool:
    """True when ``token`` is shaped like a JWT (its header is JSON naming an ``alg``).

    Cheap and unverified: only for telling a JWT from an API key. The signature part may
    be empty so that ``alg: none`` tokens reach :meth:`JWTVerifier.verify` and are refused
    there with a precise message.
    """
    if not _SHAPE.fullmatch(token):
        return False
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    # RecursionError: a header of "[[[[..." would otherwise escape as a 500.
    except (binascii.Error, ValueError, RecursionError):
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


class JWTVerifier:
    """Checks bearer JWTs against the configured keys. Build one per app, in the lifespan.

    ``client`` fetches the JWKS and is required when ``jwks_url`` is set; the lifespan
    owns and closes it.
    """

    def __init__(self, settings: JWTSettings, client: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._secret = settings.secret.get_secret_value().encode() if settings.secret else None
        self._public = load_public_key(settings.public_key) if settings.public_key else None
        self._jwks: JWKSCache | None = None
        if settings.jwks_url is not None:
            if client is None:
                raise ValueError("jwks_url is set: JWTVerifier needs an httpx.AsyncClient")
            self._jwks = JWKSCache(
                settings.jwks_url,
                client,
                min_refresh_s=settings.jwks_min_refresh_s,
                timeout_s=settings.jwks_timeout_s,
            )

    async def verify(self, token: str) -> JWTClaims:
        """The claims of a valid token; AuthenticationFailed (invalid_token) otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _refused("Token is malformed.") from exc
        key, algorithm = await self._key_for(header)
        return _claims(self._decode(token, key, algorithm))

    async def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        alg = header.get("alg")
        if alg == "HS256":
            if self._secret is None:
                raise _refused("HS256 tokens are not accepted (no shared secret configured).")
            return self._secret, "HS256"
        if alg not in _ASYMMETRIC:
            raise _refused("Token algorithm is not accepted: use HS256, RS256 or ES256.")
        kid = header.get("kid")
        if self._jwks is not None and kid is not None:
            jwk = await self._jwks.get(kid)
            if jwk is not None:
                return jwk.key, jwk.algorithm_name
        if self._public is not None:
            return self._public
        if self._jwks is None:
            raise _refused("RS256/ES256 tokens are not accepted (no public key configured).")
        raise _refused("Token key id (kid) is missing or not in the key set.")

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        settings = self._settings
        try:
            # One algorithm per key: this is what defeats algorithm confusion. An 'aud'
            # claim with no audience configured is refused (PyJWT's default, kept):
            # a token minted for another service must not work here.
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_s,
                options={"require": ["exp", "sub"], "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            raise _refused(_reason(exc)) from exc
        return payload


_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "Token has expired."),
    (jwt.ImmatureSignatureError, "Token is not valid yet (nbf or iat in the future)."),
    (jwt.InvalidAudienceError, "Token audience (aud) is not accepted."),
    (jwt.InvalidIssuerError, "Token issuer (iss) is not accepted."),
    (jwt.InvalidSignatureError, "Token signature is invalid."),
    (jwt.InvalidAlgorithmError, "Token algorithm does not match its signing key."),
    (InvalidSubjectError, "Token 'sub' claim must be a non-empty string."),
    (jwt.InvalidKeyError, "Token signing key is unusable."),
    (jwt.DecodeError, "Token is malformed."),
)


def _reason(exc: jwt.PyJWTError) -> str:
    """A fixed message per failure: nothing from the token is echoed back."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"Token lacks the required '{exc.claim}' claim."
    return next((text for kind, text in _REASONS if isinstance(exc, kind)), "Token is invalid.")


def _claims(payload: dict[str, Any]) -> JWTClaims:
    subject = payload["sub"]
    if not isinstance(subject, str) or not subject:
        raise _refused("Token 'sub' claim must be a non-empty string.")
    exp = payload["exp"]  # PyJWT has checked that int(exp) is in the future
    if isinstance(exp, bool) or not isinstance(exp, int | float) or exp > _MAX_EXP:
        raise _refused("Token 'exp' claim must be a Unix time in seconds.")
    return JWTClaims(
        subject=subject,
        models=_strings(payload, "models"),
        permissions=_strings(payload, "permissions") or frozenset(),
        rpm=_positive_int(payload, "rpm"),
        tpm=_positive_int(payload, "tpm"),
        expires_at=float(exp),
    )


def _strings(payload: dict[str, Any], name: str) -> frozenset[str] | None:
    """None when absent; present means a list of strings (null is not 'everything')."""
    if name not in payload:
        return None
    value = payload[name]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _refused(f"Token '{name}' claim must be a list of strings.")
    return frozenset(value)


def _positive_int(payload: dict[str, Any], name: str) -> int | None:
    if name not in payload:
        return None
    value = payload[name]
    # bool is an int subclass: `true` must not read as a limit of 1.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _refused(f"Token '{name}' claim must be a positive integer.")
    return value


def _refused(message: str) -> AuthenticationFailed:
    return AuthenticationFailed(message, code="invalid_token")
