"""Admission against a principal's limits: reserve before forwarding, settle after.

A request reserves 1 in its ``rpm`` window and an *estimate* in its ``tpm``
window and token budget: prompt tokens estimated from the body, plus the
completion tokens it may generate (``max_tokens`` x ``n``; the gateway sets
``max_tokens`` on every request that leaves it out, so this is always a real
bound on what the engine generates). When the answer ends, the reservation is
settled to the engine's real ``usage`` (or, for a stream that ended early, to
the engine's running count up to its last event). Reserving the maximum first
is what makes the limit hold under concurrency: parallel requests cannot all
pass a check that only looks at past usage.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field

from gateway.auth import Principal
from gateway.errors import RateLimited, RedisUnavailable
from gateway.metrics import Metrics
from gateway.protocol import APIRequest, completion_allowance
from gateway.ratelimit import Decision, Limiter, Window
from gateway.redis_policy import RedisPolicy
from gateway.settings import RateLimitSettings

_log = logging.getLogger("portico.quota")


def _reset(seconds: float) -> str:
    """OpenAI's duration format for x-ratelimit-reset-*: '1s', '6m0s', '250ms'."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60}s"


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, suffix in (("rpm", "requests"), ("tpm", "tokens")):
        state = decision.states.get(name)
        if state is not None:
            headers[f"x-ratelimit-limit-{suffix}"] = str(state.limit)
            headers[f"x-ratelimit-remaining-{suffix}"] = str(state.remaining)
            headers[f"x-ratelimit-reset-{suffix}"] = _reset(state.reset_s)
    return headers


@dataclass
class Admission:
    """A granted reservation; ``settle`` once with the real token count."""

    limiter: Limiter | None
    principal: Principal
    reserved: int
    reservation: str = ""
    tpm: Window | None = None
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False
    usage_charged: bool = False  # ``reserved`` is in the key's usage counter

    async def settle(self, tokens: int) -> None:
        if self.settled or self.limiter is None:
            return
        self.settled = True
        try:
            # A no-op when the reservation was never recorded (settle only rewrites an
            # existing entry), so an admission that failed open settles safely too.
            if self.tpm is not None:
                await self.limiter.settle(self.tpm, self.reservation, tokens)
            if self.usage_charged:
                await self.limiter.charge(self.principal.id, None, tokens - self.reserved)
        except RedisUnavailable as exc:
            # The reservation stays as charged and ages out with its window.
            _log.warning("could not settle usage for %s (%s)", self.principal.id, exc.reason)


class QuotaService:
    def __init__(
        self,
        limiter: Limiter,
        settings: RateLimitSettings,
        max_tokens: int,
        policy: RedisPolicy,
        metrics: Metrics,
        batch_tpm: int | None = None,
    ) -> None:
        self._limiter = limiter
        self._settings = settings
        self._max_tokens = max_tokens  # what the engine may generate when max_tokens is unset
        self._policy = policy
        self._metrics = metrics
        self._batch_tpm = batch_tpm  # the batch lines' own window (BatchesSettings.tpm)

    async def admit(
        self, principal: Principal, request: APIRequest, prompt: int | None, batch: bool = False
    ) -> Admission:
        """Reserve the request's share (``prompt``: its estimated prompt tokens). None:
        a cache hit, counted against rpm but spending no tokens, as the engine does no
        work (its tpm window is only read, for the x-ratelimit headers). ``batch``: a
        Batch API line, counted in its own tokens-per-minute window only (never in the
        key's rpm and tpm, which are the interactive traffic's); the budget is charged."""
        reserve = 0
        if prompt is not None:
            reserve = prompt + completion_allowance(request, self._max_tokens)
        rpm = None if batch else principal.rpm or self._settings.default_rpm
        tpm = self._batch_tpm if batch else principal.tpm or self._settings.default_tpm
        if tpm and reserve > tpm:
            self._metrics.ratelimit_rejections.labels("tpm").inc()
            raise RateLimited(  # no wait can help: the SDK is told not to retry
                f"This request alone may use {reserve} tokens, more than this key's limit "
                f"of {tpm} tokens per minute; lower max_tokens or shorten the prompt.",
                None,
            )
        # The model is one the engine serves (checked before admission): bounded keys.
        subject = f"{principal.id}:{request.model}" if self._settings.per_model else principal.id
        windows = []
        if rpm:
            windows.append(Window("rpm", subject, rpm, 1))
        tpm_window = Window("batch_tpm" if batch else "tpm", subject, tpm, reserve) if tpm else None
        if tpm_window is not None:
            windows.append(tpm_window)
        admission = Admission(self._limiter, principal, reserve, uuid.uuid4().hex, tpm_window)
        try:
            if windows:
                decision = await self._limiter.acquire(windows, admission.reservation)
                admission.headers = rate_limit_headers(decision)
                if not decision.admitted:
                    self._refuse(decision)
            await self._charge_budget(admission)
        except RedisUnavailable as exc:
            self._policy.limits_unchecked(exc)
            # Still settled at the end: a call that timed out may have run in Redis
            # anyway (its answer was lost), and its reservation must not hold the
            # client's tpm for a window. Usage is left alone: whether the budget was
            # charged is unknown.
            return Admission(self._limiter, principal, reserve, admission.reservation, tpm_window)
        return admission

    def _refuse(self, decision: Decision) -> None:
        kind = decision.refused_by or "rpm"
        self._metrics.ratelimit_rejections.labels(kind).inc()
        state = decision.states[kind]
        unit = "requests" if kind == "rpm" else "tokens"
        message = f"Rate limit reached: {state.limit} {unit} per minute."
        raise RateLimited(message, decision.retry_after_s, headers=rate_limit_headers(decision))

    async def _charge_budget(self, admission: Admission) -> None:
        principal = admission.principal
        if principal.kind != "key" or admission.reserved == 0:
            return
        charged = await self._limiter.charge(
            principal.id, principal.budget_tokens, admission.reserved
        )
        admission.usage_charged = charged
        if not charged:
            admission.settled = True  # nothing was charged to the budget
            if admission.tpm is not None:
                await self._limiter.settle(admission.tpm, admission.reservation, 0)
            self._metrics.ratelimit_rejections.labels("budget").inc()
            # No Retry-After but x-should-retry: false: a budget does not refill.
            raise RateLimited(
                "This key's token budget is spent.",
                None,
                code="insufficient_quota",
                headers=admission.headers,
            )
