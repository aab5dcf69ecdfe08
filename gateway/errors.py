"""The gateway's one error tree and its one renderer.

    GatewayError                    rendered as {"error": {message, type, param, code}}
    ├── InvalidRequest              400 invalid_request_error (param names the field)
    │   ├── PayloadTooLarge         413
    │   ├── RequestTimeout          408 the body did not arrive within limits.body_read_s
    │   ├── URLTooLong              414
    │   └── HeadersTooLarge         431 (too many headers, or too many bytes of them)
    ├── AuthenticationFailed        401 authentication_error
    ├── PermissionDenied            403 permission_denied (model not allowed, not an admin)
    ├── NotFound                    404 (unknown model: code model_not_found)
    ├── RateLimited                 429 rate_limit_exceeded / insufficient_quota, Retry-After
    ├── BackendUnavailable          503 a backing store is down, Retry-After
    │   └── RedisUnavailable        Redis did not answer in time, refused, or its breaker is
    │                               open (gateway.redis_guard); gateway.redis_policy decides
    │                               whether a caller goes on without it or answers this 503
    ├── UpstreamError               problems reaching or hearing from an engine
    │   ├── EngineUnavailable       503 (connect refused/reset, no healthy engine, queue full)
    │   │   ├── EngineUnreachable   a transport could not connect or lost the connection
    │   │   │                           before the headers (gateway.upstream maps it)
    │   │   └── EngineBusy          503 the engine's own 503 (its queue is full), Retry-After
    │   ├── EngineTimeout           504 (no headers in time; a stream that stalled)
    │   └── EngineRejected          the engine's own 4xx/5xx, status and message passed through
    └── InternalError               500, message never carries details

Transport exceptions (aiohttp, OSError) become ``UpstreamError`` in
:mod:`gateway.upstream` only; redis-py's become ``RedisUnavailable`` in
:mod:`gateway.redis_guard` only.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class GatewayError(Exception):
    status_code = 500
    error_type = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else type(self).code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "request_too_large"


class RequestTimeout(InvalidRequest):
    status_code = 408
    code = "request_timeout"


class URLTooLong(InvalidRequest):
    status_code = 414
    code = "url_too_long"


class HeadersTooLarge(InvalidRequest):
    status_code = 431
    code = "request_header_fields_too_large"


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status_code = 403
    error_type = "permission_denied"
    code = "permission_denied"


class RateLimited(GatewayError):
    """429; ``retry_after_s`` (whole seconds, at least 1) also goes into Retry-After.
    None: waiting cannot help (a spent budget, a request larger than the limit), so the
    answer says ``x-should-retry: false`` and the OpenAI SDK fails at once."""

    status_code = 429
    error_type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        retry_after_s: int | None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        advice = (
            {"x-should-retry": "false"}
            if retry_after_s is None
            else {"retry-after": str(max(1, retry_after_s))}
        )
        super().__init__(message, code=code, headers={**(headers or {}), **advice})
        if code == "insufficient_quota":
            self.error_type = "insufficient_quota"


class BackendUnavailable(GatewayError):
    status_code = 503
    error_type = "service_unavailable"
    code = "backend_unavailable"


class RedisUnavailable(BackendUnavailable):
    """Redis did not answer in time, refused, or the breaker is open. ``reason`` is for
    logs; the client's message never carries it."""

    def __init__(self, reason: str) -> None:
        super().__init__("Key store unavailable; retry shortly.", headers={"retry-after": "1"})
        self.reason = reason


class NotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"


class EngineUnavailable(UpstreamError):
    status_code = 503
    error_type = "service_unavailable"
    code = "engine_unavailable"


class EngineUnreachable(EngineUnavailable):
    """A transport could not connect, or the connection broke before the headers."""


class EngineBusy(EngineUnavailable):
    """The engine answered 503: it is overloaded, not broken (its circuit stays closed)."""


class EngineTimeout(UpstreamError):
    status_code = 504
    error_type = "timeout"
    code = "engine_timeout"


class EngineRejected(UpstreamError):
    """The engine answered with an error; its status and message reach the client."""

    def __init__(
        self, status_code: int, message: str, error_type: str, param: str | None, code: Any
    ) -> None:
        super().__init__(message, param=param, code=code if isinstance(code, str) else None)
        self.status_code = status_code
        self.error_type = error_type


class InternalError(GatewayError):
    status_code = 500
    error_type = "internal_error"


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def render(exc: GatewayError) -> JSONResponse:
    """The only place an error becomes an HTTP response."""
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)
