"""Who is calling: API keys (static from settings, or created through /admin)
and JWTs, resolved to one ``Principal``.

Keys are accepted as ``Authorization: Bearer <key>`` (what the OpenAI SDK sends)
or ``X-API-Key``; never from the URL. Only digests are compared, in constant
time. Failed attempts are counted per client IP in the shared limiter; an IP
over ``auth_failures_per_ip`` gets 429 before its key is even looked at, so
keys cannot be brute-forced.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, NoReturn

from gateway.errors import AuthenticationFailed, RateLimited, RedisUnavailable
from gateway.jwt_verifier import JWTClaims, JWTVerifier, looks_like_jwt
from gateway.keys import KeyHasher, KeyRecord, KeyStore
from gateway.metrics import Metrics
from gateway.permissions import Permission, holds
from gateway.ratelimit import Limiter, Window
from gateway.redis_policy import RedisPolicy
from gateway.settings import GatewaySettings

# Keys resolved in the last minute stay usable while Redis is down (fail-open only).
_FALLBACK_TTL_S = 60.0
_FALLBACK_SIZE = 10_000
_SUSPECT_IPS = 10_000


@dataclass(frozen=True)
class Principal:
    """The caller, as limits and permissions see it. ``id`` is safe to log."""

    id: str
    kind: Literal["key", "static", "jwt", "anonymous", "admin_token"]
    models: frozenset[str] | None = None
    permissions: frozenset[str] = frozenset()
    rpm: int | None = None
    tpm: int | None = None
    max_tokens: int | None = None
    budget_tokens: int | None = None

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    @property
    def is_admin(self) -> bool:
        return "admin" in self.permissions

    def holds(self, permission: Permission) -> bool:
        return holds(self.permissions, permission)


ANONYMOUS = Principal(id="anonymous", kind="anonymous")
# The admin token from settings: every permission, no model restriction.
ADMIN_TOKEN = Principal(id="admin_token", kind="admin_token", permissions=frozenset({"admin"}))


def principal_for_key(record: KeyRecord) -> Principal:
    """The principal an API key record authenticates as."""
    return Principal(
        id=record.id,
        kind="key",
        models=None if record.models is None else frozenset(record.models),
        permissions=frozenset(record.permissions or ()),
        rpm=record.rpm,
        tpm=record.tpm,
        max_tokens=record.max_tokens,
        budget_tokens=record.budget_tokens,
    )


def _from_claims(claims: JWTClaims) -> Principal:
    return Principal(
        id=f"jwt:{claims.subject}",
        kind="jwt",
        models=claims.models,
        permissions=claims.permissions,
        rpm=claims.rpm,
        tpm=claims.tpm,
    )


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return x_api_key or None


class Authenticator:
    def __init__(
        self,
        settings: GatewaySettings,
        hasher: KeyHasher,
        store: KeyStore,
        jwt: JWTVerifier,
        limiter: Limiter,
        metrics: Metrics,
        policy: RedisPolicy | None = None,
    ) -> None:
        self._hasher = hasher
        self._static = [hasher.digest(k.get_secret_value()) for k in settings.api_keys]
        self._open = settings.dev_mode and not self._static
        self._store = store
        self._jwt = jwt
        self._jwt_enabled = settings.jwt.enabled
        self._limiter = limiter
        self._metrics = metrics
        # None: the policy the settings name (the app passes its one shared instance).
        self._policy = policy or RedisPolicy(settings.redis.failure_policy, metrics)
        self._ip_limit = settings.rate_limits.auth_failures_per_ip
        self._fallback: OrderedDict[str, tuple[KeyRecord, float]] = OrderedDict()
        self._suspects: OrderedDict[str, float] = OrderedDict()
        # Lookups in flight, by key id: a burst on one key is one Redis GET, not
        # hundreds queued behind the connection pool (whose wait counts against
        # the Redis timeout). Only concurrent callers share an answer, so a
        # revocation is seen by the next request that starts after it.
        self._inflight: dict[str, asyncio.Task[KeyRecord | None]] = {}

    async def authenticate(self, presented: str | None, client_ip: str) -> Principal:
        if presented is None:
            if self._open:
                return ANONYMOUS
            await self._refuse(client_ip, "Missing API key: send 'Authorization: Bearer <key>' "
                               "or 'X-API-Key'.", "missing_api_key")  # fmt: skip
        await self.check_ip(client_ip)
        try:
            return await self._resolve(presented)
        except AuthenticationFailed as exc:
            await self._refuse(client_ip, exc.message, exc.code)
            raise  # unreachable: _refuse raises

    async def _resolve(self, presented: str) -> Principal:
        if self._jwt_enabled and looks_like_jwt(presented):
            return _from_claims(await self._jwt.verify(presented))
        digest = self._hasher.digest(presented)
        static = [s for s in self._static if secrets.compare_digest(s, digest)]
        if static:
            return Principal(id="static_" + digest[:12], kind="static")
        record = await self._lookup(KeyHasher.key_id(digest))
        if record is None or not secrets.compare_digest(record.digest, digest):
            raise AuthenticationFailed("Incorrect API key provided.")
        if not record.active(time.time()):
            raise AuthenticationFailed("This API key has been revoked or has expired.")
        return principal_for_key(record)

    async def _fetch(self, key_id: str) -> KeyRecord | None:
        task = self._inflight.get(key_id)
        if task is None:
            task = asyncio.ensure_future(self._store.get(key_id))
            self._inflight[key_id] = task
            task.add_done_callback(lambda t: self._settled(key_id, t))
        # Shielded: a client that disconnects must not cancel the others' lookup.
        return await asyncio.shield(task)

    def _settled(self, key_id: str, task: asyncio.Task[KeyRecord | None]) -> None:
        self._inflight.pop(key_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away

    async def _lookup(self, key_id: str) -> KeyRecord | None:
        try:
            record = await self._fetch(key_id)
        except RedisUnavailable as exc:
            cached = self._fallback.get(key_id)
            recent = (
                cached[0] if cached and time.monotonic() - cached[1] < _FALLBACK_TTL_S else None
            )
            return self._policy.key_fallback(exc, recent)
        if record is not None:
            self._fallback[key_id] = (record, time.monotonic())
            self._fallback.move_to_end(key_id)
            if len(self._fallback) > _FALLBACK_SIZE:
                self._fallback.popitem(last=False)
        return record

    def _ip_window(self, client_ip: str) -> Window:
        return Window("auth_ip", client_ip, self._ip_limit, 1)

    async def check_ip(self, client_ip: str) -> None:
        """RateLimited (429) when ``client_ip`` is over its failure limit. Call it before
        comparing any secret, so a blocked address learns nothing from its guesses."""
        # Only IPs that failed recently cost a limiter call; the rest pay nothing.
        if client_ip not in self._suspects:
            return
        try:
            failures = await self._limiter.count(self._ip_window(client_ip))
        except RedisUnavailable as exc:
            self._policy.tolerate(exc, "the per-IP failure check")  # the lesser harm
            return
        if failures >= self._ip_limit:
            self._metrics.ratelimit_rejections.labels("auth_ip").inc()
            raise RateLimited("Too many failed authentication attempts from this address.", 60)

    async def _refuse(self, client_ip: str, message: str, code: str | None) -> NoReturn:
        self._metrics.auth_failures.inc()
        self._suspects[client_ip] = time.monotonic()
        self._suspects.move_to_end(client_ip)
        if len(self._suspects) > _SUSPECT_IPS:
            self._suspects.popitem(last=False)
        # If Redis fails here the 401 stands; only the brute-force counter misses one.
        try:
            await self._limiter.acquire([self._ip_window(client_ip)], uuid.uuid4().hex)
        except RedisUnavailable as exc:
            self._policy.tolerate(exc, "the per-IP failure counter")
        raise AuthenticationFailed(message, code=code)
