"""Bad requests are refused by the gateway in the OpenAI error shape, and the
engine never sees them (its HTTP request counter does not move)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import MODEL, Stack

pytestmark = pytest.mark.e2e

CHAT = "/chat/completions"
COMPLETIONS = "/completions"


@pytest.fixture
def gateway(stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as client:
        yield client


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}


CASES = [
    pytest.param(CHAT, {**_chat(), "model": "gpt-nonexistent"}, 404, "model", id="unknown-model"),
    pytest.param(CHAT, _chat(max_tokens=10**6), 400, "max_tokens", id="max-tokens-over-cap"),
    pytest.param(CHAT, _chat(n=100), 400, "n", id="n-over-cap"),
    pytest.param(CHAT, _chat(temperature=7), 400, "temperature", id="temperature-out-of-range"),
    pytest.param(CHAT, {"model": MODEL}, 400, "messages", id="missing-messages"),
    pytest.param(CHAT, _chat(messages=[]), 400, "messages", id="empty-messages"),
    pytest.param(COMPLETIONS, {"model": MODEL, "prompt": "x", "best_of": 99}, 400, "best_of",
                 id="best-of-over-cap"),
    pytest.param(COMPLETIONS, {"prompt": "x"}, 400, "model", id="missing-model"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "param"), CASES)
def test_invalid_request_is_refused_before_the_engine(
    stack: Stack, gateway: httpx.Client, path: str, body: dict[str, Any], status: int, param: str
) -> None:
    before = stack.engine_generation_requests()
    response = gateway.post(path, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    if status == 404:
        assert error["code"] == "model_not_found"
    assert stack.engine_generation_requests() == before


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b"\xff\xfe\x00garbage", b""],
    ids=["malformed", "array", "invalid-utf8", "empty"],
)
def test_unparseable_body_is_a_400(stack: Stack, gateway: httpx.Client, raw: bytes) -> None:
    before = stack.engine_generation_requests()
    response = gateway.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert stack.engine_generation_requests() == before


def test_oversized_body_is_a_413(stack: Stack, gateway: httpx.Client) -> None:
    before = stack.engine_generation_requests()
    huge = _chat(messages=[{"role": "user", "content": "x" * 2_000_000}])
    response = gateway.post(CHAT, json=huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert stack.engine_generation_requests() == before


def test_error_message_never_echoes_the_input(gateway: httpx.Client) -> None:
    canary = "CANARY-7f3a-secret-prompt"
    response = gateway.post(CHAT, json=_chat(temperature=canary))
    assert response.status_code == 400
    assert canary not in response.text


def test_engine_error_status_and_message_pass_through(gateway: httpx.Client) -> None:
    response = gateway.post(COMPLETIONS, json={"model": MODEL, "prompt": "x", "top_k": -5})
    assert response.status_code == 400
    assert "top_k" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/pause", "/collective_rpc", "/tokenize", "/invocations",
                                  "/v1/../pause", "/v1/tokenize", "/metrics/../pause"])  # fmt: skip
def test_vllm_admin_routes_are_not_reachable(stack: Stack, path: str) -> None:
    for method in ("GET", "POST"):
        response = httpx.request(
            method, stack.gateway_url + path, json={}, timeout=10,
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )  # fmt: skip
        assert response.status_code in (404, 405)
        assert "error" in response.json()


def test_request_id_is_echoed_or_created(gateway: httpx.Client) -> None:
    given = gateway.get("/models", headers={"X-Request-Id": "trace-abc.123"})
    assert given.headers["x-request-id"] == "trace-abc.123"
    made = gateway.get("/models", headers={"X-Request-Id": "bad id with spaces"})
    assert made.headers["x-request-id"] != "bad id with spaces"
    assert len(made.headers["x-request-id"]) == 32


def test_ops_endpoints_answer(stack: Stack) -> None:
    assert httpx.get(stack.gateway_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(stack.gateway_url + "/readyz").json()
    assert ready == {"status": "ready"}
    assert "version" in httpx.get(stack.gateway_url + "/version").json()
    metrics = httpx.get(stack.gateway_url + "/metrics").text
    assert 'portico_requests_total{model="' in metrics
    assert "portico_request_duration_seconds_bucket" in metrics
    assert "portico_requests_in_flight" in metrics
