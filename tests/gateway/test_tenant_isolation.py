"""What one tenant can do to its own charge, to the engines and to other tenants,
on the real app with the real Redis in front of the fake engine (issue #14).
The same behaviours against the real vLLM engine: tests/e2e/test_hostile_tenant.py."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.protocol import ENGINE_CONTROL_FIELDS
from tests.gateway.fake_engine import MODEL, USAGE, FakeEngine
from tests.gateway.servers import serving
from tests.gateway.test_keys_and_limits import ADMIN_AUTH, _create, _gateway, prefix

__all__ = ["prefix"]  # the fixture, used by name


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def engine_url(fake: FakeEngine) -> Iterator[str]:
    with serving(fake.app) as url:
        yield url


def _usage(client: httpx.Client, key_id: str) -> int:
    return int(client.get(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).json()["usage_tokens"])


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _settled(client: httpx.Client, key_id: str, at_least: int, timeout_s: float = 5) -> int:
    """The key's usage once settlement (which runs as the stream ends) has happened."""
    deadline = time.monotonic() + timeout_s
    while (used := _usage(client, key_id)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return used


def test_a_stream_is_charged_the_engines_token_count_not_its_events(
    engine_url: str, prefix: str, fake: FakeEngine
) -> None:
    # Each event carries 100 tokens (vLLM batches them with --stream-interval): a
    # client that reads three events and leaves has received ~300 tokens.
    for client in _gateway(engine_url, prefix):
        key, key_id = _create(client, tpm=1_000_000)
        body = {"model": MODEL, "prompt": "batched-events", "max_tokens": 4000, "stream": True}
        events = []
        with client.stream("POST", "/v1/completions", json=body, headers=_auth(key)) as answer:
            assert answer.status_code == 200
            for line in answer.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
                if len(events) == 3:
                    break
        # The engine's running count is the gateway's to read, not the client's.
        assert all('"usage"' not in event for event in events)
        sent = json.loads(fake.received[-1])
        assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
        assert _settled(client, key_id, at_least=300) >= 300 + USAGE["prompt_tokens"]


@pytest.mark.parametrize("field", ENGINE_CONTROL_FIELDS)
def test_fields_that_steer_the_engine_beyond_the_answer_are_refused(
    engine_url: str, prefix: str, fake: FakeEngine, field: str
) -> None:
    for client in _gateway(engine_url, prefix):
        key, _ = _create(client)
        value: Any = {"stream_interval": 1000, "priority": -100, "chat_template": "{{ 1 }}"}.get(
            field, {"x": 1}
        )
        body = {"model": MODEL, "prompt": "fine", "max_tokens": 5, field: value}
        answer = client.post("/v1/completions", json=body, headers=_auth(key))
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == field
        assert fake.received == []


def test_outcomes_a_tenant_can_provoke_do_not_take_the_engine_out_of_rotation(
    engine_url: str, prefix: str
) -> None:
    # A body that makes the engine fail (500), and answers that outlast the
    # generation limit (504): three of either used to open the breaker for everyone.
    for client in _gateway(engine_url, prefix, upstream={"generation_s": 0.2}):
        hostile, _ = _create(client)
        other, _ = _create(client)
        for prompt, status in [("error-500", 500)] * 4 + [("slow-ok", 504)] * 4:
            body = {"model": MODEL, "prompt": prompt, "max_tokens": 5}
            assert client.post(
                "/v1/completions", json=body, headers=_auth(hostile)
            ).status_code == (status)
        time.sleep(0.3)  # the suspect checks ask /health, which answers
        answer = client.post(
            "/v1/completions",
            json={"model": MODEL, "prompt": "fine", "max_tokens": 5},
            headers=_auth(other),
        )
        assert answer.status_code == 200, answer.text
        assert client.get("/readyz").status_code == 200


def test_a_long_non_stream_answer_is_not_cut_by_the_first_byte_limit(
    engine_url: str, prefix: str
) -> None:
    # vLLM sends a non-stream answer's headers when generation ends: the first-byte
    # limit (meant for queueing and prefill) must not bound the whole generation.
    for client in _gateway(engine_url, prefix, upstream={"first_byte_s": 0.1}):
        key, _ = _create(client)
        body = {"model": MODEL, "prompt": "slow-ok", "max_tokens": 5}
        assert client.post("/v1/completions", json=body, headers=_auth(key)).status_code == 200


def test_failed_requests_are_charged_as_documented(engine_url: str, prefix: str) -> None:
    # Both failures come after the engine read the request: charged the prompt
    # estimate, not 0 (as a timeout was) and not the reservation (max_tokens 100).
    for client in _gateway(engine_url, prefix, upstream={"generation_s": 0.2}):
        key, key_id = _create(client, tpm=1_000_000)
        body = {"model": MODEL, "prompt": "slow-ok", "max_tokens": 100}
        assert client.post("/v1/completions", json=body, headers=_auth(key)).status_code == 504
        timed_out = _usage(client, key_id)
        assert 0 < timed_out < 100
        body = {"model": MODEL, "prompt": "error-500", "max_tokens": 100}
        assert client.post("/v1/completions", json=body, headers=_auth(key)).status_code == 500
        assert 0 < _usage(client, key_id) - timed_out < 100


@pytest.mark.parametrize("absent", [{}, {"max_tokens": None}])
def test_a_request_without_max_tokens_gets_the_keys_cap(
    engine_url: str, prefix: str, fake: FakeEngine, absent: dict[str, Any]
) -> None:
    for client in _gateway(engine_url, prefix):
        key, _ = _create(client, max_tokens=50)
        body = {"model": MODEL, "prompt": "fine", **absent}
        assert client.post("/v1/completions", json=body, headers=_auth(key)).status_code == 200
        assert json.loads(fake.received[-1])["max_tokens"] == 50


def test_a_request_without_max_tokens_gets_the_gateway_cap(
    engine_url: str, prefix: str, fake: FakeEngine
) -> None:
    for client in _gateway(engine_url, prefix, limits={"max_tokens": 64}):
        key, _ = _create(client)
        body = {"model": MODEL, "prompt": "fine", "max_tokens": None, "stream": True}
        assert client.post("/v1/completions", json=body, headers=_auth(key)).status_code == 200
        assert json.loads(fake.received[-1])["max_tokens"] == 64


def test_stream_null_is_read_as_false(engine_url: str, prefix: str) -> None:
    for client in _gateway(engine_url, prefix):
        key, _ = _create(client)
        body = {"model": MODEL, "prompt": "fine", "max_tokens": 5, "stream": None}
        answer = client.post("/v1/completions", json=body, headers=_auth(key))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/json")


def test_engine_errors_carry_openai_types_and_codes(engine_url: str, prefix: str) -> None:
    for client in _gateway(engine_url, prefix):
        key, _ = _create(client)
        body = {"model": MODEL, "prompt": "error-500", "max_tokens": 5}
        error = client.post("/v1/completions", json=body, headers=_auth(key)).json()["error"]
        # The fake answers like vLLM: {"type": "InternalServerError", "code": 500}.
        assert error["type"] == "api_error"
        assert error["code"] is None


def test_metrics_name_engines_without_their_addresses(engine_url: str, prefix: str) -> None:
    for client in _gateway(engine_url, prefix):
        key, _ = _create(client)
        body = {"model": MODEL, "prompt": "fine", "max_tokens": 5}
        assert client.post("/v1/completions", json=body, headers=_auth(key)).status_code == 200
        text = client.get("/metrics").text
        assert 'engine="engine-0"' in text
        host = engine_url.removeprefix("http://")
        assert host not in text
        assert "127.0.0.1" not in text


def test_a_request_that_can_never_fit_the_tpm_limit_fails_at_once_in_the_sdk(
    engine_url: str, prefix: str
) -> None:
    for client in _gateway(engine_url, prefix):
        key, _ = _create(client, tpm=1000)
        sent: list[httpx.Request] = []
        http = httpx.Client(event_hooks={"request": [sent.append]})
        base = str(client.base_url).rstrip("/")
        sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=key, http_client=http)
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as info:
            sdk.completions.create(model=MODEL, prompt="fine", max_tokens=2000)
        assert time.monotonic() - started < 5
        assert len(sent) == 1  # no retry: waiting cannot make 2000 tokens fit in 1000
        assert "1000" in info.value.message
        http.close()


def test_cache_hits_carry_the_token_half_of_the_rate_limit_headers(
    engine_url: str, prefix: str
) -> None:
    for client in _gateway(engine_url, prefix):
        key, _ = _create(client, rpm=100, tpm=100_000)
        body = {"model": MODEL, "prompt": "fine", "max_tokens": 5, "temperature": 0}
        fresh = client.post("/v1/completions", json=body, headers=_auth(key))
        hit = client.post("/v1/completions", json=body, headers=_auth(key))
        assert hit.headers["x-cache"] == "hit", fresh.headers
        for name in ("limit", "remaining", "reset"):
            assert f"x-ratelimit-{name}-tokens" in hit.headers
            assert f"x-ratelimit-{name}-requests" in hit.headers
        assert re.fullmatch(r"\d+", hit.headers["x-ratelimit-remaining-tokens"])
