"""``/v1/embeddings`` through the real app and the real Redis, in front of the fake
engine: what the gateway itself decides (validation, caps, the model allow-list,
tpm charged from usage, the per-tenant cache). tests/e2e/test_embeddings.py runs
the real clients against the real vLLM embedding engine."""

from __future__ import annotations

import base64
import json
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, OTHER_MODEL, FakeEngine
from tests.gateway.servers import serving

ADMIN = "admin-token-for-embedding-tests-0123"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def gateway(engine: FakeEngine) -> Iterator[httpx.Client]:
    prefix = f"test-embed-{uuid.uuid4().hex[:10]}"
    with serving(engine.app) as engine_url:
        settings = GatewaySettings(
            engine_url=engine_url,
            redis_url=REDIS_URL,
            admin_token=ADMIN,
            redis={"prefix": prefix},
            limits={"max_inputs": 4},
        )
        with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as c:
            yield c
    store = redis.Redis.from_url(REDIS_URL)
    keys = list(store.scan_iter(f"{prefix}:*"))
    if keys:
        store.delete(*keys)
    store.close()


def _key(client: httpx.Client, **spec: Any) -> str:
    created = client.post("/admin/keys", json={"name": "embed", **spec}, headers=ADMIN_AUTH)
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def _embed(client: httpx.Client, key: str, **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "input": "hello", **body}
    return client.post("/v1/embeddings", json=payload, headers={"Authorization": f"Bearer {key}"})


@pytest.mark.parametrize(
    "value", ["one text", ["two", "texts"], [101, 2023, 102], [[101, 102], [101, 7592, 102]]]
)
def test_every_input_form_reaches_the_engine_as_sent(
    gateway: httpx.Client, engine: FakeEngine, value: Any
) -> None:
    key = _key(gateway)
    answer = _embed(gateway, key, input=value)
    assert answer.status_code == 200, answer.text
    sent = json.loads(engine.received[-1])
    assert sent["input"] == value
    assert sent["model"] == MODEL
    expected = len(value) if isinstance(value, list) and isinstance(value[0], str | list) else 1
    assert len(answer.json()["data"]) == expected


def test_the_openai_sdk_reads_floats_and_base64(gateway: httpx.Client, engine: FakeEngine) -> None:
    client = openai.OpenAI(base_url=str(gateway.base_url) + "/v1", api_key=_key(gateway))
    floats = client.embeddings.create(model=MODEL, input=["a", "b"], encoding_format="float")
    assert [item.embedding for item in floats.data] == [[0.5, 0.0, -1.0], [0.5, 1.0, -1.0]]
    assert floats.usage.prompt_tokens == 10
    raw = client.embeddings.create(model=MODEL, input="a", encoding_format="base64")
    assert struct.unpack("<3f", base64.b64decode(str(raw.data[0].embedding))) == (0.5, 0, -1)
    # With no format the SDK asks for base64 and decodes it into floats itself.
    default = client.embeddings.create(model=MODEL, input=["a", "b"])
    assert json.loads(engine.received[-1])["encoding_format"] == "base64"
    assert default.data[1].embedding == [0.5, 1.0, -1.0]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": [[101], []]}, "input"),
        ({"input": {"text": "x"}}, "input"),
        ({"stream": True}, "stream"),
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"dimensions": 0}, "dimensions"),
        ({"model": ""}, "model"),
    ],
)
def test_bad_input_is_a_400_naming_its_field_and_never_reaches_the_engine(
    gateway: httpx.Client, engine: FakeEngine, body: dict[str, Any], param: str
) -> None:
    answer = _embed(gateway, _key(gateway), **body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert engine.received == []


def test_more_inputs_than_the_cap_is_a_400(gateway: httpx.Client, engine: FakeEngine) -> None:
    answer = _embed(gateway, _key(gateway), input=["x"] * 5)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "limit_exceeded"
    assert "4 inputs" in answer.json()["error"]["message"]
    assert engine.received == []


def test_a_model_outside_the_keys_allow_list_is_403(
    gateway: httpx.Client, engine: FakeEngine
) -> None:
    key = _key(gateway, models=[OTHER_MODEL])
    answer = _embed(gateway, key)
    assert answer.status_code == 403
    assert answer.json()["error"]["param"] == "model"
    assert engine.received == []


def test_tokens_are_reserved_from_the_inputs_then_settled_to_usage(
    gateway: httpx.Client,
) -> None:
    key = _key(gateway, tpm=1000)
    first = _embed(gateway, key, input=["alpha beta", "gamma"])
    assert first.status_code == 200
    reserved = 1000 - int(first.headers["x-ratelimit-remaining-tokens"])
    assert 0 < reserved < 50  # the inputs' estimate, and no completion allowance
    # Bytes of the same classes as the first's: the same estimate, and not a cache hit.
    second = _embed(gateway, key, input=["gamma beta", "alpha"])
    used = 1000 - int(second.headers["x-ratelimit-remaining-tokens"])
    assert used == 10 + reserved  # the first settled to its usage (5 per input)


def test_a_tpm_too_small_for_the_inputs_is_a_429(gateway: httpx.Client) -> None:
    key = _key(gateway, tpm=5)
    refused = _embed(gateway, key, input=["a long text " * 20])
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_exceeded"
    assert "retry-after" in refused.headers or refused.headers.get("x-should-retry") == "false"


def test_embeddings_are_cached_per_tenant_with_fresh_ids(
    gateway: httpx.Client, engine: FakeEngine
) -> None:
    first_key, other_key = _key(gateway), _key(gateway)
    first = _embed(gateway, first_key, input=["cache me"])
    again = _embed(gateway, first_key, input=["cache me"])
    other = _embed(gateway, other_key, input=["cache me"])
    assert first.headers["x-cache"] == "miss"
    assert again.headers["x-cache"] == "hit"
    assert other.headers["x-cache"] == "miss"  # another tenant never reads this one's entry
    assert len(engine.received) == 2
    assert again.json()["data"] == first.json()["data"]
    assert again.json()["id"].startswith("embd-")
    assert again.json()["id"] != first.json()["id"]


def test_an_engine_error_is_passed_through_and_not_cached(
    gateway: httpx.Client, engine: FakeEngine
) -> None:
    key = _key(gateway)
    engine.fail_status = 400
    refused = _embed(gateway, key)
    assert refused.status_code == 400
    engine.fail_status = None
    answered = _embed(gateway, key)
    assert answered.status_code == 200
    assert answered.headers["x-cache"] == "miss"


def test_vllms_chat_style_embeddings_are_refused(gateway: httpx.Client, engine: FakeEngine) -> None:
    """vLLM embeds a conversation sent as "messages": text the gateway would neither
    estimate for tpm nor redact. Not OpenAI's API, so refused."""
    messages = [{"role": "user", "content": "a long text " * 1000}]
    answer = _embed(gateway, _key(gateway), messages=messages)
    assert answer.status_code == 400
    assert "messages" in answer.json()["error"]["message"]
    assert engine.received == []


def test_input_is_redacted_before_the_engine_when_redaction_is_on(engine: FakeEngine) -> None:
    with serving(engine.app) as engine_url:
        settings = GatewaySettings(
            engine_url=engine_url, api_keys=["k"], redaction={"mode": "redact"}
        )
        with serving(create_app(settings)) as url:
            answer = httpx.post(
                url + "/v1/embeddings",
                json={"model": MODEL, "input": ["mail me at jane.doe@example.com", "plain"]},
                headers={"Authorization": "Bearer k"},
                timeout=10,
            )
    assert answer.status_code == 200, answer.text
    sent = json.loads(engine.received[-1])["input"]
    assert sent[0] == "mail me at [EMAIL]"
    assert sent[1] == "plain"
