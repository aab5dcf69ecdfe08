"""HTTP routes. Each handler reads its dependencies, calls a service, returns.

Only these paths reach an engine; vLLM's other endpoints (/pause,
/collective_rpc, /tokenize, ...) have no route here and answer 404.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import __version__, telemetry
from gateway.auth import Principal, presented_key
from gateway.errors import (
    BackendUnavailable,
    EngineUnavailable,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
)
from gateway.generation import Call
from gateway.middleware import request_id
from gateway.resources import Resources, ResourcesDep

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


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes, and with
    408 unless all of it arrives within ``timeout_s`` (uvicorn has no body-read timeout:
    a client trickling its body would otherwise hold the request open for ever). Both
    answers close the connection, so the rest of the body is not read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _too_large(limit)
    except TimeoutError as exc:
        message = f"The request body did not arrive within {timeout_s:g} s."
        raise RequestTimeout(message, headers={"connection": "close"}) from exc
    except ClientDisconnect as exc:  # nobody reads this answer; a 400 keeps 500s for our faults
        raise InvalidRequest("The client left before sending the whole body.") from exc
    return bytes(body)


def _too_large(limit: int) -> PayloadTooLarge:
    message = f"Request body is larger than {limit} bytes."
    return PayloadTooLarge(message, headers={"connection": "close"})


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
    limits = resources.settings.limits
    body = await read_body(request, limits.max_body_bytes, limits.body_read_s)
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
    return await resources.generation.respond(call)


# The two generation routes are plain Starlette routes, not FastAPI ones, and resolve
# resources and the caller themselves, in the order the dependencies would: on the
# gateway's hottest path FastAPI's per-request machinery (dependency solving, its
# exit-stack scope, endpoint wrapping) cost ~15 % of its CPU per request (bench/).
# gateway/openapi.py documents them from the same pydantic models.


async def completions(request: Request) -> Response:
    return await _generate(request, "/v1/completions")


async def chat_completions(request: Request) -> Response:
    return await _generate(request, "/v1/chat/completions")


generation_routes = [
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
]


@v1.get("/models")
async def models(resources: ResourcesDep, who: PrincipalDep) -> dict[str, Any]:
    """The engine's list, narrowed to the models this caller may use."""
    listing = await resources.catalog.listing()
    data = [m for m in listing.get("data", []) if who.may_use(str(m.get("id")))]
    return {**listing, "data": data}


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (no dependency is checked)."""
    return {"status": "ok"}


_NOT_READY = {
    "description": "Draining, or a model the engines serve has no engine in rotation",
    "content": {"application/json": {"schema": {"type": "object", "required": ["status"]}}},
}


@ops.get("/readyz", responses={503: _NOT_READY})
async def readyz(resources: ResourcesDep) -> JSONResponse:
    """Ready when every model the engines serve has at least one engine in rotation
    (judged from the active health checks), and the gateway is not draining."""
    if resources.drain.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    try:
        listing = await resources.catalog.listing()
    except EngineUnavailable as exc:
        return JSONResponse({"status": "unavailable", "reason": exc.message}, status_code=503)
    ready, uncovered = resources.pool.readiness()
    if not ready:
        reason = f"no engine in rotation for {uncovered}" if uncovered else "no models"
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ready", "models": [m.get("id") for m in listing["data"]]})


@ops.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}


@ops.get("/metrics")
async def metrics(resources: ResourcesDep) -> Response:
    return Response(resources.metrics.render(), media_type=resources.metrics.content_type)
