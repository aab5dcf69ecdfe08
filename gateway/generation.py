"""The completions service: validate, authorise, consult the cache, admit,
forward, relay, settle, store.

Takes plain values (a principal, body bytes, header values), never a Request,
so it is usable and testable without ASGI.
"""

from __future__ import annotations

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
from gateway.errors import GatewayError, InvalidRequest, PermissionDenied
from gateway.metrics import Metrics
from gateway.protocol import ChatCompletionRequest, CompletionRequest, GenerationRequest, parse
from gateway.quota import Admission, QuotaService, batch_size, estimate_prompt_tokens
from gateway.redaction import Redactor
from gateway.replay import StreamAssembler, entry_from_body, replay_body, replay_stream
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
    ) -> None:
        self._router = router
        self._redactor = redactor  # None: redaction off, bodies pass untouched
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
            admission = await self._quota.admit(call.principal, call.request)
            response = await self._forward(call, admission, plan, leader)
        except BaseException:
            self._release(plan, leader)
            raise
        response.headers["x-cache"] = result
        return response

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
            is_deterministic(request.temperature, request.seed),
            call.cache_control,
            call.cache_mode,
        )

    async def _hit(self, call: Call, entry: dict[str, Any]) -> Response:
        self._metrics.cache_results.labels("hit").inc()
        telemetry.current().cache = "hit"
        admission = await self._quota.admit(call.principal, call.request, tokens=False)
        headers = {**admission.headers, "x-cache": "hit"}
        if call.request.stream:
            events = replay_stream(entry, call.chat, call.wants_usage)
            # One body: a plain iterator would make Starlette hop to a thread per chunk.
            return Response(b"".join(events), media_type="text/event-stream", headers=headers)
        return Response(
            replay_body(entry, call.chat), media_type="application/json", headers=headers
        )

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
        self, call: Call, admission: Admission, plan: CachePlan, leader: Flight | None
    ) -> Response:
        """Send the client's bytes (plus a usage request on streams); relay; settle."""
        # vLLM uses x-request-id as its internal request id, which must be unique;
        # a client may reuse its own id, so the engine gets it with a fresh suffix.
        upstream_id = f"{call.request_id}-{secrets.token_hex(4)}"
        headers = {"content-type": "application/json", "x-request-id": upstream_id}
        body = call.body
        if call.request.stream and not call.wants_usage:
            body = _with_stream_usage(body)
        key = affinity_key(call.request, call.session, self._prefix_chars)
        try:
            upstream, lease = await self._router.open(call.request, key, call.route, body, headers)
        except GatewayError:
            await admission.settle(0)  # the engine did no work: give the reservation back
            raise
        media_type = upstream.headers.get("content-type", "application/json")
        if call.request.stream:
            return self._relay(call, admission, plan, leader, (upstream, lease), media_type)
        failed = True
        try:
            content = await lease.node.engine.read(upstream)
            failed = False
        except GatewayError:
            # The client gets an error, not the answer: charged its prompt, as a broken
            # stream is charged what it relayed. Holding the whole reservation would
            # shrink the client's tpm for a window over the engine's failure.
            await admission.settle(estimate_prompt_tokens(call.request))
            raise
        finally:
            await upstream.aclose()
            lease.release(failed=failed)
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

    def _relay(
        self,
        call: Call,
        admission: Admission,
        plan: CachePlan,
        leader: Flight | None,
        opened: tuple[Any, Lease],
        media_type: str,
    ) -> Response:
        upstream, lease = opened
        prompt = estimate_prompt_tokens(call.request)
        recorder = StreamAssembler(call.chat) if plan.write and plan.key else None
        tap = UsageTap(strip_usage=not call.wants_usage, recorder=recorder)

        ended = False

        async def on_end(tap: UsageTap) -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            # A stream the engine broke counts against it; a client leaving does not.
            lease.release(failed=tap.error is not None)
            telemetry.current().add_usage(tap.usage)
            try:
                await admission.settle(tap.total_tokens() or prompt + tap.content_events)
            finally:
                entry = tap.recorder.entry() if tap.recorder is not None else None
                await self._finish(plan, leader, entry)

        engine = lease.node.engine
        return RelayResponse(engine, upstream, media_type, tap, on_end, admission.headers)

    def _check_caps(self, request: GenerationRequest, principal: Principal) -> None:
        limits = self._limits
        max_tokens = min(limits.max_tokens, principal.max_tokens or limits.max_tokens)
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


def _with_stream_usage(body: bytes) -> bytes:
    """The body with ``stream_options.include_usage`` on, so streams can be charged.
    The only case where the engine does not receive the client's bytes unchanged."""
    payload = json.loads(body)
    options = payload.get("stream_options") or {}
    payload["stream_options"] = {**options, "include_usage": True}
    return json.dumps(payload).encode()


def _usage(content: bytes) -> dict[str, Any] | None:
    try:
        usage = json.loads(content).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None
