"""Schemathesis against the gateway's own /openapi.json (issue #10): every documented
operation gets schema-valid requests and, where it takes a body, schema-invalid ones;
no answer is a 5xx or breaks the schema, a credential the schema asks for is really
required, and invalid data is refused with a 4xx. The real app on a real socket, with a
fake engine that answers completions and chat completions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.servers import serving

KEY = "pk-test-fuzz-0123456789"
ADMIN = "admin-token-fuzz-0123456789"
EXAMPLES = 30  # per operation and mode: about 15 s for the file on a 2-core box
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
    negative_data_rejection,
]
# (method, path, credential, takes a body: also fuzzed with invalid data)
OPERATIONS = [
    ("POST", "/v1/completions", KEY, True),
    ("POST", "/v1/chat/completions", KEY, True),
    ("POST", "/v1/embeddings", KEY, True),
    ("POST", "/v1/responses", KEY, True),
    ("GET", "/v1/responses/{response_id}", KEY, False),
    ("DELETE", "/v1/responses/{response_id}", KEY, False),
    ("POST", "/v1/responses/{response_id}/cancel", KEY, False),
    ("POST", "/v1/files", KEY, True),
    ("GET", "/v1/files", KEY, False),
    ("GET", "/v1/files/{file_id}", KEY, False),
    ("GET", "/v1/files/{file_id}/content", KEY, False),
    ("DELETE", "/v1/files/{file_id}", KEY, False),
    ("POST", "/v1/batches", KEY, True),
    ("GET", "/v1/batches", KEY, False),
    ("GET", "/v1/batches/{batch_id}", KEY, False),
    ("POST", "/v1/batches/{batch_id}/cancel", KEY, False),
    ("GET", "/v1/models", KEY, False),
    ("GET", "/v1/models/{model_id}", KEY, False),
    ("GET", "/healthz", None, False),
    ("GET", "/readyz", None, False),
    ("GET", "/version", None, False),
    ("POST", "/admin/keys", ADMIN, True),
    ("GET", "/admin/keys", ADMIN, False),
    ("GET", "/admin/keys/{key_id}", ADMIN, False),
    ("PATCH", "/admin/keys/{key_id}", ADMIN, True),
    ("DELETE", "/admin/keys/{key_id}", ADMIN, False),
    ("GET", "/admin/engines", ADMIN, False),
    ("POST", "/admin/engines/{name}/drain", ADMIN, False),
    ("POST", "/admin/engines/{name}/undrain", ADMIN, False),
    ("POST", "/admin/models/refresh", ADMIN, False),
]
# Prometheus text, no request data: nothing for a schema to say or a fuzzer to vary.
UNFUZZED = {("GET", "/metrics")}
CASES = [
    pytest.param(method, path, token, mode, id=f"{method} {path} {mode.value}")
    for method, path, token, body in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if body or mode is GenerationMode.POSITIVE
]


async def _chat(_: Request) -> Response:
    choice = {"index": 0, "message": {"role": "assistant", "content": "ok"}}
    answer = {"id": "chatcmpl-fake", "object": "chat.completion", "model": MODEL}
    return JSONResponse({**answer, "choices": [{**choice, "finish_reason": "stop"}]})


async def _response(_: Request) -> Response:
    output = [{"type": "message", "role": "assistant", "content": [{"type": "output_text",
              "text": "ok"}]}]  # fmt: skip
    usage = {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}
    answer = {"id": "resp_fake", "object": "response", "model": MODEL, "status": "completed"}
    return JSONResponse({**answer, "output": output, "usage": usage})


@pytest.fixture(scope="module")
def api_schema() -> Iterator[BaseSchema]:
    engine = FakeEngine().app
    engine.router.routes.append(Route("/v1/chat/completions", _chat, methods=["POST"]))
    engine.router.routes.append(Route("/v1/responses", _response, methods=["POST"]))
    with serving(engine) as engine_url:
        gateway = GatewaySettings(
            engine_url=engine_url,
            api_keys=[KEY],
            admin_token=ADMIN,
            # ignored_auth probes every operation with missing and wrong credentials from
            # one address; at the default limit the lockout (429) would answer the probes
            # instead of the authentication under test (the lockout: test_auth_attacks).
            rate_limits={"auth_failures_per_ip": 1_000_000},
        )
        with serving(create_app(gateway)) as url:
            yield schemathesis.openapi.from_url(url + "/openapi.json", timeout=10)


def test_every_documented_operation_is_fuzzed(api_schema: BaseSchema) -> None:
    paths = api_schema.raw_schema["paths"]
    documented = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert documented == {(m, p) for m, p, _, _ in OPERATIONS} | UNFUZZED


# Hypothesis driven directly rather than through `schemathesis.pytest.from_fixture`:
# under pytest 9 its lazy parametrisation fails (it reads `request.node._nodeid`).
@pytest.mark.parametrize(("method", "path", "token", "mode"), CASES)
def test_operation_answers_as_its_schema_says(
    api_schema: BaseSchema, method: str, path: str, token: str | None, mode: GenerationMode
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    @given(api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        # Each example is an HTTP round trip, slow by Hypothesis's measure.
        suppress_health_check=[HealthCheck.too_slow],
    )
    def fuzz(case: Case) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and "model" in case.body:
            # A model the engine serves, so valid requests reach it and its answers
            # (JSON or server-sent events) are checked, not only the 404 for a random name.
            case.body["model"] = MODEL
        case.call_and_validate(headers=headers, timeout=30, checks=CHECKS)

    fuzz()
