"""The completions service: validate, authorise, admit, forward, relay, settle.

Takes plain values (a principal, body bytes, a request id), never a Request,
so it is usable and testable without ASGI.
"""

from __future__ import annotations

import json
import secrets

from starlette.responses import Response

from gateway.auth import Principal
from gateway.catalog import ModelCatalog
from gateway.errors import GatewayError, InvalidRequest, PermissionDenied
from gateway.protocol import ChatCompletionRequest, CompletionRequest, GenerationRequest, parse
from gateway.quota import Admission, QuotaService, estimate_prompt_tokens
from gateway.settings import Limits
from gateway.streaming import RelayResponse, UsageTap
from gateway.upstream import Engine

ROUTES: dict[str, type[GenerationRequest]] = {
    "/v1/completions": CompletionRequest,
    "/v1/chat/completions": ChatCompletionRequest,
}


class GenerationService:
    def __init__(
        self, engine: Engine, catalog: ModelCatalog, limits: Limits, quota: QuotaService
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._limits = limits
        self._quota = quota

    async def validate(self, path: str, body: bytes, principal: Principal) -> GenerationRequest:
        """Everything that can refuse a request before the engine sees it."""
        request = parse(ROUTES[path], body)
        self._check_caps(request, principal)
        if not principal.may_use(request.model):
            raise PermissionDenied(
                f"This key may not use the model '{request.model[:200]}'.", param="model"
            )
        await self._catalog.require(request.model)
        return request

    async def admit(self, principal: Principal, request: GenerationRequest) -> Admission:
        return await self._quota.admit(principal, request)

    async def forward(
        self, path: str, body: bytes, request: GenerationRequest, admission: Admission, rid: str
    ) -> Response:
        """Send the client's bytes (plus a usage request on streams); relay; settle."""
        # vLLM uses x-request-id as its internal request id, which must be unique;
        # a client may reuse its own id, so the engine gets it with a fresh suffix.
        headers = {
            "content-type": "application/json",
            "x-request-id": f"{rid}-{secrets.token_hex(4)}",
        }
        wants_usage = bool(request.stream_options and request.stream_options.include_usage)
        if request.stream and not wants_usage:
            body = _with_stream_usage(body)
        try:
            upstream = await self._engine.open(path, body, headers)
        except GatewayError:
            await admission.settle(0)  # the engine did no work: give the reservation back
            raise
        media_type = upstream.headers.get("content-type", "application/json")
        if request.stream:
            prompt = estimate_prompt_tokens(request)

            async def settle(tap: UsageTap) -> None:
                await admission.settle(tap.total_tokens or prompt + tap.content_events)

            tap = UsageTap(strip_usage=not wants_usage)
            return RelayResponse(self._engine, upstream, media_type, tap, settle, admission.headers)
        try:
            content = await self._engine.read(upstream)
        except GatewayError:
            await admission.settle(admission.reserved)  # unknown work done: keep it charged
            raise
        finally:
            await upstream.aclose()
        await admission.settle(_total_tokens(content, admission.reserved))
        return Response(
            content, status_code=upstream.status_code, media_type=media_type,
            headers=admission.headers,
        )  # fmt: skip

    def _check_caps(self, request: GenerationRequest, principal: Principal) -> None:
        max_tokens = min(self._limits.max_tokens, principal.max_tokens or self._limits.max_tokens)
        caps = [("max_tokens", request.max_tokens, max_tokens)]
        if isinstance(request, ChatCompletionRequest):
            caps.append(("max_completion_tokens", request.max_completion_tokens, max_tokens))
        caps.append(("n", request.n, self._limits.max_n))
        if isinstance(request, CompletionRequest):
            caps.append(("best_of", request.best_of, self._limits.max_n))
        for param, value, cap in caps:
            if value is not None and value > cap:
                raise InvalidRequest(
                    f"'{param}' is {value}, above this gateway's limit of {cap}.",
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


def _total_tokens(content: bytes, fallback: int) -> int:
    try:
        usage = json.loads(content).get("usage") or {}
        return int(usage["total_tokens"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return fallback
