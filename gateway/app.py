"""``create_app``: the gateway's only entry point. Run with
``uvicorn --factory gateway.app:create_app``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from gateway import __version__, openapi
from gateway.admin import admin
from gateway.api import generation_routes, ops, v1
from gateway.batches_api import batches
from gateway.body import BodyLimits
from gateway.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    error_body,
    render,
)
from gateway.files import upload_cap
from gateway.files_api import files
from gateway.hosts import AllowedHosts
from gateway.metrics import Metrics
from gateway.middleware import RequestContextMiddleware, RequestHeadLimits, request_id
from gateway.proxies import ForwardedClient
from gateway.resources import lifespan_for
from gateway.settings import GatewaySettings

_log = logging.getLogger("portico.gateway")
E = TypeVar("E", bound=Exception)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the app. Settings default to the environment, read here (not at import)."""
    settings = settings if settings is not None else GatewaySettings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    # httpx logs every request line at INFO; the access log already covers it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    metrics = Metrics(settings.prometheus_multiproc_dir)
    app = FastAPI(
        title="Portico",
        version=__version__,
        lifespan=lifespan_for(settings, metrics),
        docs_url=None,
        redoc_url=None,
        # No 307 to the slash-less path: its Location would be built from the Host the
        # client sent, and OpenAI's API does not redirect either. A 404 instead.
        redirect_slashes=False,
    )
    app.router.routes.extend(generation_routes)
    app.include_router(v1)
    app.include_router(files)
    app.include_router(batches)
    app.include_router(ops)
    app.include_router(admin)
    openapi.install(app)
    _install_error_handlers(app)
    # Inside the context middleware, so refusals are counted, logged and carry the id.
    limits = settings.limits
    # The upload's own cap: a file at its limit plus framing; every other route keeps
    # limits.max_body_bytes.
    caps = {("POST", "/v1/files"): upload_cap(settings.files, limits.max_buffered_body_bytes)}
    app.add_middleware(BodyLimits, limits=limits, metrics=metrics, caps=caps)
    app.add_middleware(RequestHeadLimits, limits=settings.limits)
    # First check inside the context middleware: an unknown Host is refused before any
    # other work, and the refusal is still counted, logged and carries the request id.
    app.add_middleware(
        AllowedHosts, patterns=settings.allowed_hosts, warn_if_any=not settings.dev_mode
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    # Outermost: everything inside sees the client address, not a proxy's (docs/deploy.md).
    app.add_middleware(ForwardedClient, proxies=settings.trusted_proxies)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    def validation_error(exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return render(
            InvalidRequest(f"Invalid request: {first.get('msg', 'bad input')}.", param=param)
        )

    def http_error(exc: HTTPException) -> Response:
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        body = error_body(str(exc.detail), "invalid_request_error", None, kind)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def unexpected(_: Request, exc: Exception) -> Response:
        # The one top-level handler: log with the request id, tell the client nothing internal.
        _log.exception("unhandled error (request_id=%s)", request_id.get())
        return render(InternalError("Internal error; the request id identifies it in the logs."))

    app.add_exception_handler(GatewayError, _handler(GatewayError, render))
    app.add_exception_handler(
        RequestValidationError, _handler(RequestValidationError, validation_error)
    )
    app.add_exception_handler(HTTPException, _handler(HTTPException, http_error))
    app.add_exception_handler(Exception, unexpected)


def _handler(
    kind: type[E], respond: Callable[[E], Response]
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """An exception handler for ``kind``: Starlette types every handler's argument as
    Exception, although it passes only the class the handler is registered for."""

    async def handle(_: Request, exc: Exception) -> Response:
        if not isinstance(exc, kind):
            raise exc
        return respond(exc)

    return handle
