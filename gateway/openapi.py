"""The OpenAPI document at ``/openapi.json``.

FastAPI describes the routes it serves itself. The two generation routes are
plain Starlette routes (why: gateway/api.py), so FastAPI does not see them;
they are described here, from the same pydantic models that validate their
bodies, with the error shape every refusal uses and the two ways to present a
key. The admin routes read their bodies by hand, after the caller check
(gateway/body.py), so FastAPI does not see those bodies either: they are
described here from their models too. Built once, on first request, like
FastAPI's own.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from gateway.admin import KeyUpdate
from gateway.batches import BatchCreate
from gateway.keys import KeySpec
from gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ResponsesRequest,
)

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
    ("/v1/embeddings", EmbeddingRequest, "Create embeddings (OpenAI API)"),
    ("/v1/responses", ResponsesRequest, "Create a response (OpenAI Responses API)"),
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
    "503": "No engine available, queue full, gateway draining, or too many request bodies "
    "being received at once (Retry-After)",
    "504": "The engine did not start answering in time",
}


_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}

# What the engine answers, as far as the gateway relies on it: the rest passes through.
_ANSWER: dict[str, Any] = {
    "type": "object",
    "required": ["choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string"},
        "choices": {"type": "array"},
    },
}

# One server-sent event of a stream: a chunk of the answer, the error that ends a
# broken stream, or the closing `[DONE]` (Open API 3.1: `schema` describes each event).
_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "anyOf": [
                {"const": "[DONE]"},
                {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"anyOf": [_ANSWER, {"$ref": "#/components/schemas/Error"}]},
                },
            ]
        }
    },
}

_AUTH_LOCKOUT = "Too many failed authentication attempts from this address (Retry-After)"

# The FastAPI routes that need a credential (by path prefix): how it is presented, and
# what they answer besides 200 and 400. The admin API reads only `Authorization`.
_GUARDED: dict[str, tuple[list[dict[str, list[str]]], dict[str, str]]] = {
    "/v1/models": (
        [{"bearer": []}, {"apiKey": []}],
        {"401": "No valid API key or JWT", "429": _AUTH_LOCKOUT, "503": "No engine available"},
    ),
    "/v1/responses/": (
        [{"bearer": []}, {"apiKey": []}],
        {
            "401": "No valid API key or JWT",
            "429": _AUTH_LOCKOUT,
            "503": "Response store unavailable (Retry-After)",
        },
    ),
    "/v1/files": (
        [{"bearer": []}, {"apiKey": []}],
        {
            "401": "No valid API key or JWT",
            "429": _AUTH_LOCKOUT,
            "503": "File store unavailable (Retry-After)",
        },
    ),
    "/v1/batches": (
        [{"bearer": []}, {"apiKey": []}],
        {
            "401": "No valid API key or JWT",
            "429": _AUTH_LOCKOUT + ", or too many unfinished batches (Retry-After)",
            "503": "Batch store unavailable (Retry-After)",
        },
    ),
    "/admin/": (
        [{"bearer": []}],
        {
            "401": "No valid admin token or JWT",
            "403": "A valid credential without this route's permission (keys:read for reading "
            "keys, keys:write for changing them, model_admin for engine operations, or admin), "
            "or granting a permission the caller does not hold",
            "429": _AUTH_LOCKOUT,
            "503": "Key store unavailable (Retry-After)",
        },
    ),
}

# FastAPI routes that read their body by hand once the caller is checked, and the model
# that validates it; what reading a body can end with besides a 400.
_READ_BY_HAND: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("/admin/keys", "post", KeySpec),
    ("/admin/keys/{key_id}", "patch", KeyUpdate),
    ("/v1/batches", "post", BatchCreate),
)
_BODY_REFUSALS = {
    "408": "The body did not arrive within the body-read time",
    "413": "Body larger than the limit",
    "503": "Key store unavailable, or too many request bodies being received at once (Retry-After)",
}


# An embeddings answer: a list of vectors (floats, or base64 of little-endian float32).
_EMBEDDINGS: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array"},
        "usage": {"type": "object"},
    },
}


# A Responses API answer, and one of its typed stream events (`event:` names its type).
_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "output"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response"},
        "status": {"type": "string"},
        "output": {"type": "array"},
        "usage": {"type": "object"},
    },
}
_RESPONSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {
            "type": "string",
            "description": "response.created, ...output_text.delta, ..., response.completed",
        },
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


def _operation(model: type[BaseModel], summary: str) -> dict[str, Any]:
    if model is EmbeddingRequest:
        answer = {
            "description": "The engine's answer: one vector per input, in input order.",
            "content": {"application/json": {"schema": _EMBEDDINGS}},
        }
    elif model is ResponsesRequest:
        answer = {
            "description": "The response (stored by the gateway unless `store: false`), or "
            "with `stream: true` its typed server-sent events, ending with `response.completed`.",
            "content": {
                "application/json": {"schema": _RESPONSE},
                "text/event-stream": {"schema": _RESPONSE_EVENT},
            },
        }
    else:
        answer = {
            "description": "The engine's answer: JSON, or with `stream: true` server-sent "
            "events ending with `data: [DONE]` (a broken stream ends with an error event).",
            "content": {
                "application/json": {"schema": _ANSWER},
                "text/event-stream": {"schema": _EVENT},
            },
        }
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
            "200": answer,
            **{
                status: {"description": text, "content": _ERROR_CONTENT}
                for status, text in _REFUSALS.items()
            },
        },
    }


def _document_fastapi_errors(paths: dict[str, Any]) -> None:
    """Make the FastAPI routes' documented refusals true: the gateway renders a
    validation error as a 400 OpenAI error (never FastAPI's 422), the routes that
    need a credential say so, and a key id that does not exist is a 404."""
    for path, item in paths.items():
        guarded = next((g for prefix, g in _GUARDED.items() if path.startswith(prefix)), None)
        for operation in item.values():
            responses = operation["responses"]
            if responses.pop("422", None) is not None:
                responses["400"] = {"description": "Invalid request", "content": _ERROR_CONTENT}
            if guarded is None:
                continue
            security, refusals = guarded
            operation["security"] = security
            for status, text in refusals.items():
                responses[status] = {"description": text, "content": _ERROR_CONTENT}
            if "{key_id}" in path:
                responses["404"] = {"description": "No key with this id", "content": _ERROR_CONTENT}
            if "{response_id}" in path:
                responses["404"] = {"description": "No stored response of this caller's with "
                                    "this id", "content": _ERROR_CONTENT}  # fmt: skip
            if "{batch_id}" in path or path == "/v1/batches":
                responses["404"] = {"description": "No batch (or input file) of this caller's "
                                    "with this id", "content": _ERROR_CONTENT}  # fmt: skip
            if "{file_id}" in path:
                responses["404"] = {"description": "No live file of this caller's with this "
                                    "id", "content": _ERROR_CONTENT}  # fmt: skip
            if path == "/v1/models/{model_id}":
                responses["404"] = {"description": "No such model, or not one this caller may use",
                                    "content": _ERROR_CONTENT}  # fmt: skip
            if "/engines/{name}" in path:
                responses["404"] = {"description": "No engine with this name",
                                    "content": _ERROR_CONTENT}  # fmt: skip
            if path == "/admin/models/refresh":
                responses["503"] = {"description": "No engine answered its model list",
                                    "content": _ERROR_CONTENT}  # fmt: skip


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    """Put ``model``'s schema (and the models it uses) in ``schemas``; its reference."""
    body = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(body.pop("$defs", {}))
    schemas[model.__name__] = body
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _document_bodies_read_by_hand(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    for path, method, model in _READ_BY_HAND:
        operation = paths[path][method]
        reference = _add_model(schemas, model)
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": reference}},
        }
        refusals = {"400": "Invalid request", **_BODY_REFUSALS}
        for status, text in refusals.items():
            operation["responses"][status] = {"description": text, "content": _ERROR_CONTENT}


# A file object of the Files API, and what the file routes answer besides errors.
_FILE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "file"},
        "bytes": {"type": "integer"},
        "created_at": {"type": "integer"},
        "expires_at": {"type": ["integer", "null"]},
        "filename": {"type": "string"},
        "purpose": {"type": "string"},
        "status": {"type": "string"},
    },
}
_FILE_ANSWERS: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/files", "post"): {"application/json": {"schema": _FILE}},
    ("/v1/files", "get"): {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["object", "data", "has_more", "first_id", "last_id"],
                "properties": {
                    "data": {"type": "array", "items": _FILE},
                    "has_more": {"type": "boolean"},
                },
            }
        }
    },
    ("/v1/files/{file_id}", "get"): {"application/json": {"schema": _FILE}},
    ("/v1/files/{file_id}/content", "get"): {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    },
    ("/v1/files/{file_id}", "delete"): {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["id", "object", "deleted"],
                "properties": {"id": {"type": "string"}, "deleted": {"const": True}},
            }
        }
    },
}
_UPLOAD: dict[str, Any] = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "JSONL, one request a line"},
        "purpose": {"enum": ["batch"]},
    },
}


def _document_files(paths: dict[str, Any]) -> None:
    """The file routes' answers, and the upload's multipart body (read by hand)."""
    for (path, method), content in _FILE_ANSWERS.items():
        paths[path][method]["responses"]["200"]["content"] = content
    upload = paths["/v1/files"]["post"]
    upload["requestBody"] = {
        "required": True,
        "content": {"multipart/form-data": {"schema": _UPLOAD}},
    }
    refusals = {
        **_BODY_REFUSALS,
        "400": "Malformed multipart, a purpose other than batch, or a bad line of the file "
        "(the message names it), or over the caller's file storage",
        "413": "File or body larger than the file size limit",
    }
    for status, text in refusals.items():
        upload["responses"][status] = {"description": text, "content": _ERROR_CONTENT}


def install(app: FastAPI) -> None:
    """Make ``app.openapi`` (served at /openapi.json) include the generation routes and
    the bodies the admin routes read by hand."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas["Error"] = _ERROR
            components.setdefault("securitySchemes", {}).update(_SECURITY_SCHEMES)
            _document_fastapi_errors(schema["paths"])
            _document_bodies_read_by_hand(schema["paths"], schemas)
            _document_files(schema["paths"])
            for path, model, summary in _GENERATION:
                _add_model(schemas, model)
                schema["paths"][path] = {"post": _operation(model, summary)}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
