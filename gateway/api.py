"""HTTP routes. Each handler reads its dependencies, calls a service, returns.

Only these paths reach an engine; vLLM's other endpoints (/pause,
/collective_rpc, /tokenize, ...) have no route here and answer 404.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import __version__, telemetry
from gateway.auth import Principal, presented_key
from gateway.body import read_body
from gateway.catalog import model_not_found
from gateway.errors import BackendUnavailable, EngineUnavailable, InvalidRequest
from gateway.exchange import Call, Reply
from gateway.middleware import request_id
from gateway.resources import Resources, ResourcesDep
from gateway.responses import not_found

_log = logging.getLogger("portico.gateway")

v1 = APIRouter(prefix="/v1")
ops = APIRouter()


async def authenticate(request: Request, resources: ResourcesDep) -> Principal:
    # Headers read directly, not as FastAPI Header() parameters: their per-request
    # conversion cost ~10 % of the gateway's CPU per request in bench/.
    headers = request.headers
    client_ip = request.client.host if request.client else "unknown"
    principal = await resources.auth.authenticate(
        presented_key(headers.get("authorization"), headers.get("x-api-key")), client_ip
    )
    telemetry.current().principal = principal.id  # for the access log: an id, never the secret
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


async def _generate(request: Request, path: str) -> Response:
    resources: Resources = request.app.state.resources
    principal = await authenticate(request, resources)
    if resources.drain.draining:
        resources.metrics.backpressure_rejections.labels("draining").inc()
        raise BackendUnavailable(
            "This gateway is shutting down; retry on another replica.",
            code="draining",
            headers={"retry-after": "1", "connection": "close"},
        )
    body = await read_body(request)
    parsed = await resources.generation.validate(path, body, principal)
    record = telemetry.current()
    record.model = parsed.model  # a model the engine serves: a bounded metric label
    record.stream = parsed.stream
    call = Call(
        route=path,
        body=body,
        request=parsed,
        principal=principal,
        request_id=request_id.get(),
        cache_control=request.headers.get("cache-control"),
        cache_mode=request.headers.get("x-portico-cache"),
        session=request.headers.get(resources.settings.routing.session_header),
    )
    return render(await resources.generation.respond(call))


def render(reply: Reply) -> Response:
    """The service's answer as HTTP: the only place a ``Reply`` meets Starlette."""
    if reply.stream is None:
        return Response(reply.body, reply.status_code, reply.headers, reply.media_type)
    return StreamReply(reply)


class StreamReply(StreamingResponse):
    """A streamed reply whose ``close`` runs however the response ends: after the last
    event, or after Starlette cancelled the body because the client left."""

    def __init__(self, reply: Reply) -> None:
        if reply.stream is None or reply.close is None:
            raise ValueError("not a streamed reply")
        headers = {**reply.headers, "content-type": reply.media_type, "cache-control": "no-cache"}
        super().__init__(reply.stream, reply.status_code, headers, reply.media_type)
        self._close = reply.close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._close()


# The engine routes are plain Starlette routes, not FastAPI ones, and resolve
# resources and the caller themselves, in the order the dependencies would: on the
# gateway's hottest path FastAPI's per-request machinery (dependency solving, its
# exit-stack scope, endpoint wrapping) cost ~15 % of its CPU per request (bench/).
# gateway/openapi.py documents them from the same pydantic models.


async def completions(request: Request) -> Response:
    return await _generate(request, "/v1/completions")


async def chat_completions(request: Request) -> Response:
    return await _generate(request, "/v1/chat/completions")


async def embeddings(request: Request) -> Response:
    return await _generate(request, "/v1/embeddings")


async def responses(request: Request) -> Response:
    return await _generate(request, "/v1/responses")


generation_routes = [
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/responses", responses, methods=["POST"]),
]


# A stored response, as gateway.responses keeps it: found only under its owner, so
# another tenant's id is the same 404 as one that never existed.


@v1.get("/responses/{response_id}")
async def retrieve_response(
    response_id: str, resources: ResourcesDep, who: PrincipalDep
) -> dict[str, Any]:
    """A stored response (``client.responses.retrieve``), as its client received it."""
    record = await resources.responses.load(who.id, response_id)
    if record is None:
        raise not_found(response_id)
    response: dict[str, Any] = record["response"]
    return response


@v1.delete("/responses/{response_id}")
async def delete_response(
    response_id: str, resources: ResourcesDep, who: PrincipalDep
) -> dict[str, Any]:
    """Forget a stored response: it can no longer be retrieved or continued."""
    if not await resources.responses.delete(who.id, response_id):
        raise not_found(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@v1.post("/responses/{response_id}/cancel")
async def cancel_response(
    response_id: str, resources: ResourcesDep, who: PrincipalDep
) -> dict[str, Any]:
    """Only background responses can be cancelled, and this gateway runs none (a
    response ends with its request; a client cancels by closing it): 400 for a stored
    response, as vLLM answers for a synchronous one, 404 for any other id."""
    if await resources.responses.load(who.id, response_id) is None:
        raise not_found(response_id)
    raise InvalidRequest(
        "Cannot cancel a synchronous response.", param="response_id", code="not_cancellable"
    )


@v1.get("/models")
async def models(resources: ResourcesDep, who: PrincipalDep) -> dict[str, Any]:
    """The engine's list, narrowed to the models this caller may use."""
    listing = await resources.catalog.listing()
    data = [m for m in listing.get("data", []) if who.may_use(str(m.get("id")))]
    return {**listing, "data": data}


@v1.get("/models/{model_id:path}")
async def model(model_id: str, resources: ResourcesDep, who: PrincipalDep) -> dict[str, Any]:
    """One model of the listing (``client.models.retrieve``). A model this caller may not
    use is the same 404 as one that does not exist, as OpenAI answers: a key learns
    nothing about models outside its allow-list."""
    if not model_id:  # "/v1/models/" is no model: the same 404 as any unknown route
        raise HTTPException(status_code=404, detail="Not Found")
    if who.may_use(model_id):
        await resources.catalog.require(model_id)  # 503 while its engines are all out
        listing = await resources.catalog.listing()
        for card in listing.get("data", []):
            if card.get("id") == model_id:
                return dict(card)
    raise model_not_found(model_id)


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (no dependency is checked)."""
    return {"status": "ok"}


_STATUS = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"enum": ["ready", "unavailable", "draining"]}},
            }
        }
    }
}
_NOT_READY = {"description": "Draining, or a model the engines serve has no engine in rotation"}


@ops.get("/readyz", responses={200: _STATUS, 503: {**_NOT_READY, **_STATUS}})
async def readyz(resources: ResourcesDep) -> JSONResponse:
    """Ready when every model the engines serve has at least one engine in rotation
    (judged from the active health checks), and the gateway is not draining. The answer
    is the status alone: this route needs no credential, so what is served, or missing,
    goes to the log."""
    if resources.drain.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    try:
        await resources.catalog.listing()
    except EngineUnavailable as exc:
        _log.warning("readyz: unavailable: %s", exc.message)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    ready, uncovered = resources.pool.readiness()
    if not ready:
        _log.warning("readyz: unavailable: no engine in rotation for %s", uncovered or "any model")
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ready"})


# How long an engine's vLLM version is reused: /version needs no credential, so
# however often it is called, each engine is asked at most once per this many seconds.
_VERSION_MAX_AGE_S = 30.0


class EngineVersion(BaseModel):
    name: str = Field(description="The gateway's name for the engine (engine-<i>).")
    vllm_version: str | None = Field(description="Null when the engine did not say.")


class VersionInfo(BaseModel):
    version: str = Field(description="The gateway's version.")
    engines: list[EngineVersion]


@ops.get("/version")
async def version(resources: ResourcesDep) -> VersionInfo:
    """The gateway's version and each engine's vLLM version (null when the engine cannot
    say). No credential needed, so engines appear by name only, never by address."""
    nodes = list(resources.pool.nodes)
    found = await asyncio.gather(*(n.vllm_version(_VERSION_MAX_AGE_S) for n in nodes))
    engines = [
        EngineVersion(name=n.name, vllm_version=v) for n, v in zip(nodes, found, strict=True)
    ]
    return VersionInfo(version=__version__, engines=engines)


@ops.get("/metrics")
async def metrics(resources: ResourcesDep) -> Response:
    return Response(resources.metrics.render(), media_type=resources.metrics.content_type)
