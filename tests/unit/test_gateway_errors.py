from __future__ import annotations

import json

import pytest

from gateway.errors import (
    AuthenticationFailed,
    EngineRejected,
    EngineTimeout,
    EngineUnavailable,
    GatewayError,
    InternalError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UpstreamError,
    error_body,
    render,
)


def _rendered(exc: GatewayError) -> tuple[int, dict[str, object]]:
    response = render(exc)
    return response.status_code, json.loads(bytes(response.body))


@pytest.mark.parametrize(
    ("exc", "status", "error_type", "code"),
    [
        (InvalidRequest("bad"), 400, "invalid_request_error", None),
        (PayloadTooLarge("big"), 413, "invalid_request_error", "request_too_large"),
        (AuthenticationFailed("who"), 401, "authentication_error", "invalid_api_key"),
        (NotFound("gone", code="model_not_found"), 404, "invalid_request_error", "model_not_found"),
        (UpstreamError("odd"), 502, "upstream_error", None),
        (EngineUnavailable("down"), 503, "service_unavailable", "engine_unavailable"),
        (EngineTimeout("slow"), 504, "timeout", "engine_timeout"),
        (InternalError("oops"), 500, "internal_error", None),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_each_error_class_renders_its_status_type_and_code(
    exc: GatewayError, status: int, error_type: str, code: str | None
) -> None:
    rendered_status, body = _rendered(exc)
    assert rendered_status == status
    assert body == {
        "error": {"message": exc.message, "type": error_type, "param": None, "code": code}
    }


def test_rendered_body_has_exactly_the_openai_error_fields() -> None:
    _, body = _rendered(InvalidRequest("Invalid value for 'temperature'.", param="temperature"))
    assert list(body) == ["error"]
    assert body["error"] == {
        "message": "Invalid value for 'temperature'.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": None,
    }


def test_explicit_code_overrides_the_class_default() -> None:
    _, body = _rendered(AuthenticationFailed("no key", code="missing_api_key"))
    assert body["error"]["code"] == "missing_api_key"  # type: ignore[index]


def test_headers_reach_the_response() -> None:
    response = render(EngineUnavailable("busy", headers={"Retry-After": "2"}))
    assert response.headers["retry-after"] == "2"
    assert response.headers["content-type"] == "application/json"


def test_engine_rejected_keeps_the_engine_status_and_message_and_drops_a_numeric_code() -> None:
    # vLLM puts the HTTP status in "code" as an int; OpenAI's codes are names or null.
    exc = EngineRejected(422, "max_tokens is too large", "invalid_request_error", "max_tokens", 422)
    status, body = _rendered(exc)
    assert status == 422
    assert body == {
        "error": {
            "message": "max_tokens is too large",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": None,
        }
    }
    assert isinstance(exc, UpstreamError)


def test_engine_rejected_without_code_renders_null_code() -> None:
    _, body = _rendered(EngineRejected(500, "engine error", "InternalServerError", None, None))
    assert body["error"]["code"] is None  # type: ignore[index]


def test_engine_rejected_status_does_not_leak_into_the_class() -> None:
    EngineRejected(429, "slow down", "rate_limit", None, None)
    assert EngineRejected.status_code == UpstreamError.status_code == 502


def test_error_body_shape() -> None:
    assert error_body("m", "t") == {
        "error": {"message": "m", "type": "t", "param": None, "code": None}
    }
