"""The completions service: validate, authorise, consult the cache, admit,
forward, relay, settle, store.

Takes plain values (a principal, body bytes, header values), never a Request,
so it is usable and testable without ASGI.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, replace
from typing import Any

from starlette.responses import Response

from gateway import telemetry
from gateway.auth import Principal
from gateway.cache import Flight, ResponseCache
from gateway.cache_key import CachePlan, is_deterministic
from gateway.catalog import ModelCatalog
from gateway.errors import (
    EngineRejected,
    EngineTimeout,
    GatewayError,
    InvalidRequest,
    PermissionDenied,
)
from gateway.estimate import estimate_prompt_tokens
from gateway.metrics import Metrics
from gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    GenerationRequest,
    parse,
    with_fields,
)
from gateway.quota import Admission, QuotaService, batch_size, output_limit
from gateway.redaction import Redactor
from gateway.replay import Delivery, entry_from_body, replay
from gateway.routing import Lease, Router, affinity_key
from gateway.settings import Limits, RoutingSettings
from gateway.streaming import RelayResponse, UsageTap

ROUTES: dict[str, type[GenerationRequest]] = {
    "/v1/completions": CompletionRequest,
    "/v1/chat/completions": ChatCompletionRequest,
}


@dataclass(frozen=True)
class Call:
    """One generation request, as the service sees it."""

    route: str
    body: bytes
    request: GenerationRequest
    principal: Principal
    request_id: str
    cache_control: str | None = None
    cache_mode: str | None = None
    session: str | None = None  # the session header's value: sticks the call to one engine

    @property
    def chat(self) -> bool:
        return isinstance(self.request, ChatCompletionRequest)

    @property
    def wants_usage(self) -> bool:
        options = self.request.stream_options
        return bool(options and options.include_usage)

    @property
    def wants_running_usage(self) -> bool:
        # vLLM's rule: running usage on every event only together with include_usage.
        options = self.request.stream_options
        return bool(options and options.include_usage and options.continuous_usage_stats)


class GenerationService:
    def __init__(
        self,
        router: Router,
        catalog: ModelCatalog,
        limits: Limits,
        routing: RoutingSettings,
        quota: QuotaService,
        cache: ResponseCache,
        metrics: Metrics,
        redactor: Redactor | None = None,
        default_max_tokens: int | None = None,
        isolate_prefix_cache: bool = True,
    ) -> None:
        self._router = router
        self._redactor = redactor  # None: redaction off, bodies pass untouched
        self._default_max_tokens = default_max_tokens
        self._isolate = isolate_prefix_cache
        self._prefix_chars = routing.affinity_prefix_chars
        self._catalog = catalog
        self._limits = limits
        self._quota = quota
        self._cache = cache
        self._metrics = metrics

    async def validate(self, route: str, body: bytes, principal: Principal) -> GenerationRequest:
        """Everything that can refuse a request before the engine sees it."""
        request = parse(ROUTES[route], body)
        self._check_caps(request, principal)
        if not principal.may_use(request.model):
            raise PermissionDenied(
                f"This key may not use the model '{request.model[:200]}'.", param="model"
            )
        await self._catalog.require(request.model)
        return request

    async def respond(self, call: Call) -> Response:
        call = self._bounded(call)
        if self._redactor is not None:
            call = self._redact(call, self._redactor)
        plan = self._plan(call)
        leader: Flight | None = None
        if plan.key is not None and plan.read:
            entry = await self._cache.lookup(plan.key)
            if entry is None:
                leader = self._cache.lead(plan.key)
                if leader is None:  # an identical request is in flight: wait for its answer
                    entry = await self._cache.follow(plan.key)
                    leader = self._cache.lead(plan.key) if entry is None else None
            if entry is not None:
                return await self._hit(call, entry)
        result = "miss" if plan.read and plan.key else "bypass"
        self._metrics.cache_results.labels(result).inc()
        telemetry.current().cache = result
        try:
            prompt = self._prompt_tokens(call)
            admission = await self._quota.admit(call.principal, call.request, prompt)
            response = await self._forward(call, admission, plan, leader, prompt)
        except BaseException:
            self._release(plan, leader)
            raise
        response.headers["x-cache"] = result
        return response

    def _bounded(self, call: Call) -> Call:
        """The call with ``max_tokens`` set when the client left it out (or null): the
        engine would otherwise generate up to the model's context, past what was
        reserved and past the key's cap. Appended to the client's bytes, which the
        engine (and the cache key) then read; the parsed request gets it too."""
        if output_limit(call.request) is not None:
            return call
        cap = self._output_cap(call.principal)
        context = self._catalog.context_length(call.request.model)
        limit = min(cap, self._default_max_tokens or cap, context or cap)
        request = call.request.model_copy(update={"max_tokens": limit})
        return replace(call, body=with_fields(call.body, {"max_tokens": limit}), request=request)

    def _prompt_tokens(self, call: Call) -> int:
        """The prompt's estimated tokens, never more than the model's context (vLLM
        refuses a longer prompt before any work): the estimate runs high on prose."""
        estimate = estimate_prompt_tokens(call.request, call.body)
        context = self._catalog.context_length(call.request.model)
        return estimate if context is None else min(estimate, context)

    def _output_cap(self, principal: Principal) -> int:
        """The most completion tokens per choice this principal may ask for."""
        cap = self._limits.max_tokens
        return min(cap, principal.max_tokens) if principal.max_tokens else cap

    def _redact(self, call: Call, redactor: Redactor) -> Call:
        """The call with PII in its prompt text replaced, before the cache key, routing
        and the engine see it; the same call when nothing was found."""
        body, counts = redactor.body(call.body, call.chat)
        if not counts:
            return call
        for kind, count in counts.items():
            self._metrics.redactions.labels(kind).inc(count)
        # Parsed again so that routing's prefix hash and token estimate read what the
        # engine will read.
        return replace(call, body=body, request=parse(ROUTES[call.route], body))

    def _plan(self, call: Call) -> CachePlan:
        request = call.request
        return self._cache.plan(
            call.route,
            call.principal.id,
            call.body,
            request.stream,
            is_deterministic(request.temperature, request.seed),
            call.cache_control,
            call.cache_mode,
        )

    async def _hit(self, call: Call, entry: dict[str, Any]) -> Response:
        self._metrics.cache_results.labels("hit").inc()
        telemetry.current().cache = "hit"
        admission = await self._quota.admit(call.principal, call.request, None)
        headers = {**admission.headers, "x-cache": "hit"}
        # The same usage the relay would leave in a fresh stream (streaming.UsageTap).
        delivery = Delivery(call.request_id, call.chat, call.wants_usage, call.wants_running_usage)
        # One body, also for a stream: an iterator would make Starlette hop to a thread
        # per chunk. The key holds the shape, so the entry is in the shape asked for.
        media_type = "text/event-stream" if call.request.stream else "application/json"
        return Response(replay(entry, delivery), media_type=media_type, headers=headers)

    def _release(
        self, plan: CachePlan, leader: Flight | None, entry: dict[str, Any] | None = None
    ) -> None:
        if leader is not None and plan.key is not None:
            self._cache.release(plan.key, leader, entry)

    async def _finish(self, plan: CachePlan, leader: Flight | None, entry: Any) -> None:
        """Store a complete answer (if allowed) and hand it to waiting duplicates."""
        try:
            if entry is not None and plan.write and plan.key is not None:
                await self._cache.store(plan.key, entry, plan.ttl_s)
        finally:
            self._release(plan, leader, entry)

    async def _forward(
        self,
        call: Call,
        admission: Admission,
        plan: CachePlan,
        leader: Flight | None,
        prompt: int,
    ) -> Response:
        """Send the client's bytes (plus the gateway's own fields); relay; settle."""
        # vLLM uses x-request-id as its internal request id, which must be unique;
        # a client may reuse its own id, so the engine gets it with a fresh suffix.
        upstream_id = f"{call.request_id}-{secrets.token_hex(4)}"
        headers = {"content-type": "application/json", "x-request-id": upstream_id}
        body = with_fields(call.body, self._engine_fields(call))
        key = affinity_key(call.request, call.session, self._prefix_chars)
        try:
            upstream, lease = await self._router.open(call.request, key, call.route, body, headers)
        except GatewayError as exc:
            await admission.settle(_failure_charge(exc, prompt))
            raise
        media_type = upstream.headers.get("content-type", "application/json")
        if call.request.stream:
            return self._relay(call, admission, plan, leader, (upstream, lease), prompt)
        failed = True
        try:
            content = await lease.node.engine.read(upstream)
            failed = False
        except GatewayError:
            # The client gets an error, not the answer: charged its prompt, as a broken
            # stream is charged what it relayed. Holding the whole reservation would
            # shrink the client's tpm for a window over the engine's failure.
            await admission.settle(prompt)
            raise
        finally:
            await upstream.aclose()
            lease.release(suspect=failed)
        usage = _usage(content)
        telemetry.current().add_usage(usage)
        total = usage.get("total_tokens") if usage else None
        await admission.settle(total if isinstance(total, int) else admission.reserved)
        stored = entry_from_body(content) if upstream.status_code < 300 else None
        await self._finish(plan, leader, stored)
        return Response(
            content, status_code=upstream.status_code, media_type=media_type,
            headers=admission.headers,
        )  # fmt: skip

    def _engine_fields(self, call: Call) -> dict[str, Any]:
        """What the gateway adds to the client's body. On streams: usage on every event
        and at the end, so a stream is charged the engine's own count however it ends.
        With prefix-cache isolation: vLLM's ``cache_salt``, derived from the principal
        (and the client's own salt, which then only subdivides its own cache)."""
        fields: dict[str, Any] = {}
        if call.request.stream:
            fields["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
        if self._isolate:
            own = (call.request.model_extra or {}).get("cache_salt")
            seed = f"{call.principal.id}\0{own if isinstance(own, str) else ''}"
            fields["cache_salt"] = hashlib.sha256(seed.encode()).hexdigest()
        return fields

    def _relay(
        self,
        call: Call,
        admission: Admission,
        plan: CachePlan,
        leader: Flight | None,
        opened: tuple[Any, Lease],
        prompt: int,
    ) -> Response:
        upstream, lease = opened
        media_type = upstream.headers.get("content-type", "text/event-stream")
        recorder = self._cache.recorder() if plan.write and plan.key else None
        tap = UsageTap(
            strip_usage=not call.wants_usage,
            strip_running_usage=not call.wants_running_usage,
            recorder=recorder,
        )
        ended = False

        async def on_end(tap: UsageTap) -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            # A stream the engine broke makes it suspect; a client leaving does not.
            lease.release(suspect=tap.error is not None)
            telemetry.current().add_usage(tap.usage)
            try:
                await admission.settle(tap.charge(prompt))
            finally:
                entry = tap.recorder.entry() if tap.recorder is not None else None
                await self._finish(plan, leader, entry)

        engine = lease.node.engine
        return RelayResponse(engine, upstream, media_type, tap, on_end, admission.headers)

    def _check_caps(self, request: GenerationRequest, principal: Principal) -> None:
        limits = self._limits
        max_tokens = self._output_cap(principal)
        stop = [request.stop] if isinstance(request.stop, str) else request.stop or []
        # (param, value, cap, unit); a message states the cap, never the client's value.
        caps = [("max_tokens", request.max_tokens, max_tokens, "")]
        if isinstance(request, ChatCompletionRequest):
            caps.append(("max_completion_tokens", request.max_completion_tokens, max_tokens, ""))
        caps.append(("n", request.n, limits.max_n, ""))
        if isinstance(request, CompletionRequest):
            caps.append(("best_of", request.best_of, limits.max_n, ""))
            caps.append(("prompt", batch_size(request.prompt), limits.max_prompts, " prompts"))
        caps.append(("stop", len(stop), limits.max_stop, " sequences"))
        longest = max((len(s) for s in stop), default=0)
        caps.append(("stop", longest, limits.max_stop_chars, " characters per sequence"))
        for param, value, cap, unit in caps:
            if value is not None and value > cap:
                raise InvalidRequest(
                    f"'{param}' is above this gateway's limit of {cap}{unit}.",
                    param=param,
                    code="limit_exceeded",
                )


def _failure_charge(exc: GatewayError, prompt: int) -> int:
    """What a request the engine did not answer is charged. Refused before any work
    (no engine, a full queue, a refused connection, the engine's own 4xx): nothing.
    A timeout or an engine 5xx after the engine accepted it: its prompt, which the
    engine did read. The client received no tokens, and holding its whole reservation
    would shrink its limit for a window over a failure that may be the engine's."""
    if isinstance(exc, EngineTimeout):
        return prompt
    if isinstance(exc, EngineRejected) and exc.status_code >= 500:
        return prompt
    return 0


def _usage(content: bytes) -> dict[str, Any] | None:
    try:
        usage = json.loads(content).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None
