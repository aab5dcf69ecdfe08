"""Everything done to a request before the cache and the engine see it.

``validate`` refuses what must never reach an engine (a malformed body, a
value over the gateway's caps, a model the key may not use or no engine
serves). ``prepare`` shapes what is left: ``max_tokens`` set when the client
left it out, PII redacted when redaction is on. ``engine_body`` adds the
gateway's own fields. ``prompt_tokens`` is the estimate admission reserves.
All of it is plain computation on the request's bytes and parsed model.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from gateway.auth import Principal
from gateway.catalog import ModelCatalog
from gateway.errors import InvalidRequest, PermissionDenied
from gateway.estimate import estimate_prompt_tokens
from gateway.exchange import Call
from gateway.metrics import Metrics
from gateway.protocol import (
    APIRequest,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ResponsesRequest,
    batch_size,
    output_limit,
    parse,
    prompt_count,
    with_fields,
)
from gateway.redaction import Redactor
from gateway.settings import Limits

ROUTES: dict[str, type[APIRequest]] = {
    "/v1/completions": CompletionRequest,
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
    "/v1/responses": ResponsesRequest,
}


class Preparation:
    def __init__(
        self,
        catalog: ModelCatalog,
        limits: Limits,
        metrics: Metrics,
        redactor: Redactor | None = None,
        default_max_tokens: int | None = None,
        isolate_prefix_cache: bool = True,
        batch_priority: int = 0,
    ) -> None:
        self._catalog = catalog
        self._limits = limits
        self._metrics = metrics
        self._redactor = redactor  # None: redaction off, bodies pass untouched
        self._default_max_tokens = default_max_tokens
        self._isolate = isolate_prefix_cache
        self._batch_priority = batch_priority  # vLLM's priority for batch lines; 0: none

    async def validate(self, route: str, body: bytes, principal: Principal) -> APIRequest:
        """Everything that can refuse a request before the engine sees it."""
        request = parse(ROUTES[route], body)
        self._check_caps(request, principal)
        if not principal.may_use(request.model):
            raise PermissionDenied(
                f"This key may not use the model '{request.model[:200]}'.", param="model"
            )
        await self._catalog.require(request.model)
        return request

    def prepare(self, call: Call) -> Call:
        """The call as the cache key, routing and the engine must see it."""
        call = self._bounded(call)
        return call if self._redactor is None else self._redact(call, self._redactor)

    def prompt_tokens(self, call: Call) -> int:
        """The prompt's estimated tokens, never more than the model's context per
        prompt (vLLM refuses a longer prompt before any work): the estimate runs high
        on prose."""
        estimate = estimate_prompt_tokens(call.request, call.body)
        context = self._catalog.context_length(call.request.model)
        return estimate if context is None else min(estimate, context * prompt_count(call.request))

    def engine_body(self, call: Call) -> bytes:
        """The client's bytes plus the gateway's own fields. On streams: usage on every
        event and at the end, so a stream is charged the engine's own count however it
        ends. With prefix-cache isolation: vLLM's ``cache_salt``, derived from the
        principal (and the client's own salt, which then only subdivides its own cache)."""
        fields: dict[str, Any] = {}
        if isinstance(call.request, ResponsesRequest):
            # The gateway keeps responses and names them (gateway.responses).
            fields["store"] = False
            fields["request_id"] = call.response_id
        elif call.request.stream:
            fields["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
        if call.batch and self._batch_priority:
            # Served after interactive requests by an engine with priority scheduling;
            # an fcfs engine ignores it (vLLM 0.32). Clients may not send it (protocol.py).
            fields["priority"] = self._batch_priority
        if self._isolate:
            own = (call.request.model_extra or {}).get("cache_salt")
            seed = f"{call.principal.id}\0{own if isinstance(own, str) else ''}"
            fields["cache_salt"] = hashlib.sha256(seed.encode()).hexdigest()
        return with_fields(call.body, fields)

    def _bounded(self, call: Call) -> Call:
        """The call with ``max_tokens`` (the Responses API's ``max_output_tokens``) set
        when the client left it out (or null): the
        engine would otherwise generate up to the model's context, past what was
        reserved and past the key's cap. Appended to the client's bytes, which the
        engine (and the cache key) then read; the parsed request gets it too."""
        if isinstance(call.request, EmbeddingRequest) or output_limit(call.request) is not None:
            return call
        cap = self._output_cap(call.principal)
        context = self._catalog.context_length(call.request.model)
        limit = min(cap, self._default_max_tokens or cap, context or cap)
        name = "max_output_tokens" if isinstance(call.request, ResponsesRequest) else "max_tokens"
        request = call.request.model_copy(update={name: limit})
        return replace(call, body=with_fields(call.body, {name: limit}), request=request)

    def _redact(self, call: Call, redactor: Redactor) -> Call:
        """The call with PII in its prompt text replaced; the same call when nothing
        was found."""
        body, counts = redactor.body(call.body, call.route)
        if not counts:
            return call
        for kind, count in counts.items():
            self._metrics.redactions.labels(kind).inc(count)
        # Parsed again so that routing's prefix hash and token estimate read what the
        # engine will read.
        return replace(call, body=body, request=parse(ROUTES[call.route], body))

    def _output_cap(self, principal: Principal) -> int:
        """The most completion tokens per choice this principal may ask for."""
        cap = self._limits.max_tokens
        return min(cap, principal.max_tokens) if principal.max_tokens else cap

    def _check_caps(self, request: APIRequest, principal: Principal) -> None:
        limits = self._limits
        if isinstance(request, EmbeddingRequest):
            _within("input", batch_size(request.input), limits.max_inputs, " inputs")
            return
        max_tokens = self._output_cap(principal)
        stop = [request.stop] if isinstance(request.stop, str) else request.stop or []
        # (param, value, cap, unit); a message states the cap, never the client's value.
        if isinstance(request, ResponsesRequest):
            _within("max_output_tokens", request.max_output_tokens, max_tokens, "")
            self._check_stop(stop)
            return
        caps = [("max_tokens", request.max_tokens, max_tokens, "")]
        if isinstance(request, ChatCompletionRequest):
            caps.append(("max_completion_tokens", request.max_completion_tokens, max_tokens, ""))
        caps.append(("n", request.n, limits.max_n, ""))
        if isinstance(request, CompletionRequest):
            caps.append(("best_of", request.best_of, limits.max_n, ""))
            caps.append(("prompt", batch_size(request.prompt), limits.max_prompts, " prompts"))
        for param, value, cap, unit in caps:
            _within(param, value, cap, unit)
        self._check_stop(stop)

    def _check_stop(self, stop: list[str]) -> None:
        _within("stop", len(stop), self._limits.max_stop, " sequences")
        longest = max((len(s) for s in stop), default=0)
        _within("stop", longest, self._limits.max_stop_chars, " characters per sequence")


def _within(param: str, value: int | None, cap: int, unit: str) -> None:
    """A message states the cap, never the client's value."""
    if value is not None and value > cap:
        raise InvalidRequest(
            f"'{param}' is above this gateway's limit of {cap}{unit}.",
            param=param,
            code="limit_exceeded",
        )
