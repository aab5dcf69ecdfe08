"""The completions service: validate, check caps and model, forward, relay.

Takes plain values (body bytes, request id), never a Request, so it is usable
and testable without ASGI.
"""

from __future__ import annotations

import secrets

from starlette.responses import Response

from gateway.catalog import ModelCatalog
from gateway.errors import InvalidRequest
from gateway.protocol import ChatCompletionRequest, CompletionRequest, GenerationRequest, parse
from gateway.settings import Limits
from gateway.streaming import RelayResponse
from gateway.upstream import Engine

ROUTES: dict[str, type[GenerationRequest]] = {
    "/v1/completions": CompletionRequest,
    "/v1/chat/completions": ChatCompletionRequest,
}


class GenerationService:
    def __init__(self, engine: Engine, catalog: ModelCatalog, limits: Limits) -> None:
        self._engine = engine
        self._catalog = catalog
        self._limits = limits

    async def validate(self, path: str, body: bytes) -> GenerationRequest:
        """Everything that can refuse a request before the engine sees it."""
        request = parse(ROUTES[path], body)
        self._check_caps(request)
        await self._catalog.require(request.model)
        return request

    async def forward(
        self, path: str, body: bytes, request: GenerationRequest, request_id: str
    ) -> Response:
        """Send the client's original bytes; relay the answer (streamed or whole)."""
        # vLLM uses x-request-id as its internal request id, which must be unique;
        # a client may reuse its own id, so the engine gets it with a fresh suffix.
        upstream_id = f"{request_id}-{secrets.token_hex(4)}"
        headers = {"content-type": "application/json", "x-request-id": upstream_id}
        upstream = await self._engine.open(path, body, headers)
        media_type = upstream.headers.get("content-type", "application/json")
        if request.stream:
            return RelayResponse(self._engine, upstream, media_type)
        try:
            content = await self._engine.read(upstream)
        finally:
            await upstream.aclose()
        return Response(content, status_code=upstream.status_code, media_type=media_type)

    def _check_caps(self, request: GenerationRequest) -> None:
        caps = [("max_tokens", request.max_tokens, self._limits.max_tokens)]
        if isinstance(request, ChatCompletionRequest):
            caps.append(
                ("max_completion_tokens", request.max_completion_tokens, self._limits.max_tokens)
            )
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
