"""Pure ASGI middleware: request id, timing, metrics and one log line per request.

Pure ASGI (not BaseHTTPMiddleware) so streamed bodies pass through untouched
and the request's context variables are visible to the handler and its logs.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import telemetry
from gateway.errors import GatewayError, HeadersTooLarge, URLTooLong, render
from gateway.metrics import Metrics
from gateway.settings import Limits
from gateway.telemetry import RequestRecord

request_id: ContextVar[str] = ContextVar("request_id", default="-")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_log = logging.getLogger("portico.access")


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    """Accepts a sane ``X-Request-Id`` or makes one, echoes it with the gateway's own
    time (``x-portico-overhead-ms``, ``server-timing``), then counts and logs the request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        rid = incoming if incoming and _VALID_ID.match(incoming) else uuid.uuid4().hex
        # Not reset afterwards: each request runs in its own task (its own context),
        # and the top-level error handler, which runs after this middleware
        # returns, still needs the id for its log line.
        request_id.set(rid)
        record = telemetry.begin(rid)
        status = 500
        # Unlabelled: the route template is only known once the router has run.
        self.metrics.in_flight.inc()

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # For a stream this is the overhead before its first byte.
                overhead_ms = f"{record.overhead() * 1000:.2f}"
                headers = [
                    *message.get("headers", []),
                    (b"x-request-id", rid.encode()),
                    (b"x-portico-overhead-ms", overhead_ms.encode()),
                    (b"server-timing", f"gateway;dur={overhead_ms}".encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            self.metrics.in_flight.dec()
            route = _route_of(scope)
            self.metrics.observe(route, status, record)
            _log.info(_log_line(scope, route, status, record))


class RequestHeadLimits:
    """Refuses a request whose target (414) or headers (431) are over the caps, before
    any route runs. uvicorn's default parser (httptools) puts no limit on either, so
    without this a header flood would reach the routes and the engine."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = self._check(scope)
            if error is not None:
                await render(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> GatewayError | None:
        limits, close = self.limits, {"connection": "close"}
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        if target > limits.max_url_bytes:
            message = f"The request target is longer than {limits.max_url_bytes} bytes."
            return URLTooLong(message, headers=close)
        headers = scope["headers"]
        if len(headers) > limits.max_headers:
            message = f"The request has more than {limits.max_headers} headers."
            return HeadersTooLarge(message, headers=close)
        if sum(len(name) + len(value) for name, value in headers) > limits.max_header_bytes:
            message = f"The request headers are larger than {limits.max_header_bytes} bytes."
            return HeadersTooLarge(message, headers=close)
        return None


def _log_line(scope: Scope, route: str, status: int, record: RequestRecord) -> str:
    """One JSON line: ids, names and numbers only (no prompt, completion or secret)."""
    ttft = record.ttft()
    return json.dumps(
        {
            "event": "request",
            "request_id": record.request_id,
            "method": scope["method"],
            "route": route,
            "status": status,
            "principal": record.principal,
            "model": record.model,
            "engine": record.engine,
            "cache": record.cache,
            "stream": record.stream,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "duration_ms": round(record.elapsed() * 1000, 2),
            "overhead_ms": round(record.overhead() * 1000, 2),
            "ttft_ms": None if ttft is None else round(ttft * 1000, 2),
        }
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None
