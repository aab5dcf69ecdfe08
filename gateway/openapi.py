"""The OpenAPI document at ``/openapi.json``.

FastAPI describes the routes it serves itself. The two generation routes are
plain Starlette routes (why: gateway/api.py), so FastAPI does not see them;
they are described here, from the same pydantic models that validate their
bodies, with the error shape every refusal uses and the two ways to present a
key. Built once, on first request, like FastAPI's own.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from gateway.protocol import ChatCompletionRequest, CompletionRequest

_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}

_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "API key or JWT"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
}

_GENERATION: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("/v1/completions", CompletionRequest, "Create a completion (OpenAI API)"),
    ("/v1/chat/completions", ChatCompletionRequest, "Create a chat completion (OpenAI API)"),
)

# Statuses a generation request can end with besides 200, each an OpenAI error body.
_REFUSALS = {
    "400": "Invalid request (names the field in `param`)",
    "401": "No valid API key or JWT",
    "403": "The key may not use this model",
    "404": "Unknown model",
    "408": "The body did not arrive within the body-read time",
    "413": "Body larger than the limit",
    "414": "Request target longer than the limit",
    "429": "A rate limit or budget of this caller (Retry-After)",
    "431": "Too many request headers, or too large",
    "503": "No engine available, queue full or gateway draining (Retry-After)",
    "504": "The engine did not start answering in time",
}


def _operation(model: type[BaseModel], summary: str) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "summary": summary,
        "security": [{"bearer": []}, {"apiKey": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        },
        "responses": {
            "200": {
                "description": "The engine's answer: JSON, or with `stream: true` server-sent "
                "events ending with `data: [DONE]` (a broken stream ends with an error event).",
                "content": {"application/json": {}, "text/event-stream": {}},
            },
            **{
                status: {"description": text, "content": error}
                for status, text in _REFUSALS.items()
            },
        },
    }


def install(app: FastAPI) -> None:
    """Make ``app.openapi`` (served at /openapi.json) include the generation routes."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas["Error"] = _ERROR
            components.setdefault("securitySchemes", {}).update(_SECURITY_SCHEMES)
            for path, model, summary in _GENERATION:
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(body.pop("$defs", {}))
                schemas[model.__name__] = body
                schema["paths"][path] = {"post": _operation(model, summary)}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
