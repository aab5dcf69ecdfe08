"""Pure ASGI middleware: request id, timing, metrics and one log line per request.

Pure ASGI (not BaseHTTPMiddleware) so streamed bodies pass through untouched
and the request id context variable is visible to the handler and its logs.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import Metrics

request_id: ContextVar[str] = ContextVar("request_id", default="-")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_log = logging.getLogger("portico.access")


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    """Accepts a sane ``X-Request-Id`` or makes one, echoes it, times and counts the request."""

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
        started = time.perf_counter()
        status = 500
        # Unlabelled: the route template is only known once the router has run.
        self.metrics.in_flight.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, status, time.perf_counter() - started, rid)

    def _record(self, scope: Scope, status: int, seconds: float, rid: str) -> None:
        route = _route_of(scope)
        state: dict[str, Any] = scope.get("state") or {}
        model = state.get("model", "none")
        self.metrics.requests.labels(route, model, f"{status // 100}xx").inc()
        self.metrics.duration.labels(route).observe(seconds)
        _log.info(
            json.dumps(
                {
                    "event": "request",
                    "request_id": rid,
                    "method": scope["method"],
                    "route": route,
                    "model": model,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                }
            )
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None
