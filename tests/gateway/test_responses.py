"""``/v1/responses`` through the real app and the real Redis, in front of fake engines:
what the gateway itself decides (the response store, per tenant; a follow-up's
conversation inlined for whichever engine answers; limits; refused fields; sealing;
redaction). tests/e2e/test_responses.py runs the real clients against the real engine
and compares with vLLM's own store."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.app import create_app
from gateway.sealing import MAGIC
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, RESPONSE_USAGE, FakeEngine
from tests.gateway.processes import redis_server
from tests.gateway.servers import serving

ADMIN = "admin-token-for-responses-tests-0123"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
REDIS_URL = "redis://127.0.0.1:6379/0"
GATEWAY_ID = re.compile(r"resp_[0-9a-f]{32}")


class Stack:
    def __init__(self, client: httpx.Client, engines: list[FakeEngine], prefix: str) -> None:
        self.client = client
        self.engines = engines
        self.prefix = prefix

    def key(self, **spec: Any) -> str:
        created = self.client.post(
            "/admin/keys", json={"name": "responses", **spec}, headers=ADMIN_AUTH
        )
        assert created.status_code == 201, created.text
        return str(created.json()["key"])

    def sdk(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.client.base_url}/v1", api_key=key, max_retries=0)

    def post(self, key: str, **body: Any) -> httpx.Response:
        payload = {"model": MODEL, "input": "hello", **body}
        return self.client.post("/v1/responses", json=payload, headers=_auth(key))

    def received(self) -> list[dict[str, Any]]:
        """Every body the engines received, in arrival order across engines."""
        return [json.loads(raw) for engine in self.engines for raw in engine.received]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _stack(engines: int = 1, **settings: Any) -> Iterator[Stack]:
    prefix = f"test-resp-{uuid.uuid4().hex[:10]}"
    fakes = [FakeEngine(name=f"engine{i}") for i in range(engines)]
    with ExitStack() as stack:
        urls = [stack.enter_context(serving(fake.app)) for fake in fakes]
        config = GatewaySettings(
            engines=urls,
            redis_url=REDIS_URL,
            admin_token=ADMIN,
            redis={"prefix": prefix},
            **settings,
        )
        url = stack.enter_context(serving(create_app(config)))
        client = stack.enter_context(httpx.Client(base_url=url, timeout=10))
        yield Stack(client, fakes, prefix)
    store = redis.Redis.from_url(REDIS_URL)
    keys = list(store.scan_iter(f"{prefix}:*"))
    if keys:
        store.delete(*keys)
    store.close()


@pytest.fixture
def gateway() -> Iterator[Stack]:
    yield from _stack()


@pytest.fixture
def two_engines() -> Iterator[Stack]:
    # Round robin: consecutive turns of one conversation land on different engines.
    yield from _stack(engines=2, routing={"strategy": "round_robin"})


def test_a_response_is_kept_under_the_gateways_id_for_its_owner(gateway: Stack) -> None:
    client = gateway.sdk(gateway.key())
    created = client.responses.create(model=MODEL, input="hello")
    assert GATEWAY_ID.fullmatch(created.id)
    assert created.output_text == "engine0: 1 items"
    assert (
        created.to_dict()["store"] is True
    )  # the client's default, though the engine was told false
    sent = gateway.received()[-1]
    assert sent["store"] is False
    assert sent["request_id"] == created.id
    assert client.responses.retrieve(created.id).model_dump() == created.model_dump()
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.retrieve(created.id)
    assert gone.value.body["code"] == "response_not_found"  # type: ignore[index]


def test_a_follow_up_carries_the_conversation_to_whichever_engine_answers(
    two_engines: Stack,
) -> None:
    key = two_engines.key()
    first = two_engines.post(key, input="first", instructions="be brief").json()
    second = two_engines.post(key, input="second", previous_response_id=first["id"]).json()
    third = two_engines.post(key, input="third", previous_response_id=second["id"]).json()
    # Each turn on the other engine: neither holds any state of the conversation.
    texts = [r["output"][0]["content"][0]["text"] for r in (first, second, third)]
    answered_by = [text.split(":")[0] for text in texts]
    assert answered_by[0] != answered_by[1]
    assert answered_by[1] != answered_by[2]
    sent = {body["request_id"]: body for body in two_engines.received()}[third["id"]]
    assert "previous_response_id" not in sent
    assert "instructions" not in sent  # instructions are not carried over (OpenAI's rule)
    assert sent["input"] == [
        {"role": "user", "content": "first"},
        *first["output"],
        {"role": "user", "content": "second"},
        *second["output"],
        {"role": "user", "content": "third"},
    ]
    assert third["previous_response_id"] == second["id"]
    assert texts[2].endswith("5 items")


def test_another_tenant_can_neither_read_continue_delete_nor_cancel(gateway: Stack) -> None:
    owner = gateway.sdk(gateway.key())
    made = owner.responses.create(model=MODEL, input="private")
    other_key = gateway.key()
    other = gateway.sdk(other_key)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(made.id)
    engine_calls = len(gateway.received())
    refused = gateway.post(other_key, input="go on", previous_response_id=made.id)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "previous_response_not_found"
    assert refused.json()["error"]["param"] == "previous_response_id"
    assert len(gateway.received()) == engine_calls  # refused before any engine
    assert owner.responses.retrieve(made.id).id == made.id  # untouched for its owner


def test_store_false_keeps_nothing(gateway: Stack) -> None:
    key = gateway.key()
    made = gateway.sdk(key).responses.create(model=MODEL, input="forget me", store=False)
    assert made.to_dict()["store"] is False
    assert gateway.client.get(f"/v1/responses/{made.id}", headers=_auth(key)).status_code == 404
    follow = gateway.post(key, previous_response_id=made.id)
    assert follow.status_code == 400
    assert not list(redis.Redis.from_url(REDIS_URL).scan_iter(f"{gateway.prefix}:responses:*"))


def test_a_stream_is_relayed_and_kept_before_its_last_event(gateway: Stack) -> None:
    key = gateway.key()
    payload = {"model": MODEL, "input": "hello", "stream": True}
    events: list[tuple[str, dict[str, Any]]] = []
    retrieved_at_completion = None
    with gateway.client.stream("POST", "/v1/responses", json=payload, headers=_auth(key)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
                if kind == "response.completed":
                    # The client has the last event: the response must already be kept.
                    response_id = events[-1][1]["response"]["id"]
                    retrieved_at_completion = gateway.client.get(
                        f"/v1/responses/{response_id}", headers=_auth(key)
                    )
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    created, completed = events[0][1]["response"], events[-1][1]["response"]
    assert GATEWAY_ID.fullmatch(completed["id"])
    assert created["id"] == completed["id"]
    assert completed["store"] is True
    assert created["store"] is True
    assert retrieved_at_completion is not None
    assert retrieved_at_completion.status_code == 200
    assert retrieved_at_completion.json() == completed


def test_the_sdk_streams_a_response_and_its_text(gateway: Stack) -> None:
    client = gateway.sdk(gateway.key())
    with client.responses.stream(model=MODEL, input="hello") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "engine0:1items"  # the fake's deltas are its words
    assert final.output_text == "engine0: 1 items"
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_tokens_are_reserved_then_settled_to_the_responses_usage(gateway: Stack) -> None:
    key = gateway.key(tpm=5000)
    first = gateway.post(key, input="alpha beta", max_output_tokens=100)
    assert first.status_code == 200, first.text
    reserved = 5000 - int(first.headers["x-ratelimit-remaining-tokens"])
    assert reserved > 100  # the input's estimate plus max_output_tokens
    second = gateway.post(key, input="gamma delt", max_output_tokens=100)
    used = 5000 - int(second.headers["x-ratelimit-remaining-tokens"])
    assert used == RESPONSE_USAGE["total_tokens"] + reserved  # the first settled to usage


def test_a_stream_cut_short_is_charged_its_whole_reservation(gateway: Stack) -> None:
    key = gateway.key(tpm=5000)
    payload = {"model": MODEL, "input": "stall-mid-stream", "stream": True,
               "max_output_tokens": 300}  # fmt: skip
    with gateway.client.stream("POST", "/v1/responses", json=payload, headers=_auth(key)) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if "output_text.delta" in line:
                break  # the client leaves after the first token
    deadline = time.monotonic() + 5
    while not gateway.engines[0].stream_closed.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.engines[0].stream_closed.is_set()  # the engine's stream was closed
    time.sleep(0.2)
    after = gateway.post(key, input="x", max_output_tokens=1)
    # Not the 16 tokens of usage it never reported: at least its 300-token allowance.
    assert 5000 - int(after.headers["x-ratelimit-remaining-tokens"]) >= 300


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"request_id": "resp_chosen"}, "request_id"),
        (
            {"previous_input_messages": [{"role": "user", "content": "x"}]},
            "previous_input_messages",
        ),
        ({"background": True}, "background"),
        ({"priority": -10}, "priority"),
        ({"vllm_xargs": {"a": 1}}, "vllm_xargs"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": 10**6}, "max_output_tokens"),
        ({"stop": ["x"] * 100}, "stop"),
        ({"previous_response_id": ""}, "previous_response_id"),
    ],
)
def test_bad_or_gateway_only_fields_are_a_400_before_any_engine(
    gateway: Stack, body: dict[str, Any], param: str
) -> None:
    answer = gateway.post(gateway.key(), **body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert gateway.received() == []


def test_max_output_tokens_is_the_keys_cap_when_left_out(gateway: Stack) -> None:
    assert gateway.post(gateway.key(max_tokens=50)).status_code == 200
    assert gateway.received()[-1]["max_output_tokens"] == 50


def test_a_model_outside_the_keys_allow_list_is_a_403(gateway: Stack) -> None:
    answer = gateway.post(gateway.key(models=["fake-model-2"]))
    assert answer.status_code == 403
    assert gateway.received() == []


def test_cancel_of_a_kept_response_is_a_400_and_of_an_unknown_one_a_404(gateway: Stack) -> None:
    key = gateway.key()
    made = gateway.post(key).json()
    kept = gateway.client.post(f"/v1/responses/{made['id']}/cancel", headers=_auth(key))
    assert kept.status_code == 400
    assert kept.json()["error"]["param"] == "response_id"
    unknown = gateway.client.post("/v1/responses/resp_nothing/cancel", headers=_auth(key))
    assert unknown.status_code == 404


def test_a_conversation_past_the_body_limit_is_a_clear_400() -> None:
    for stack in _stack(limits={"max_body_bytes": 4000}):
        key = stack.key()
        first = stack.post(key, input="x " * 900)
        second = stack.post(key, input="y " * 900, previous_response_id=first.json()["id"])
        assert second.status_code == 200  # 3.7 KB: within the limit
        third = stack.post(key, input="z " * 900, previous_response_id=second.json()["id"])
        assert third.status_code == 400
        assert third.json()["error"]["code"] == "conversation_too_large"


def test_kept_responses_are_sealed_at_rest() -> None:
    key_text = "A" * 43 + "="
    for stack in _stack(encryption_keys=key_text):
        key = stack.key()
        made = stack.post(key, input="my secret plan").json()
        store = redis.Redis.from_url(REDIS_URL)
        [name] = list(store.scan_iter(f"{stack.prefix}:responses:*"))
        raw = store.get(name)
        store.close()
        assert isinstance(raw, bytes)
        assert raw.startswith(MAGIC)
        assert b"secret" not in raw
        kept = stack.client.get(f"/v1/responses/{made['id']}", headers=_auth(key))
        assert kept.json()["output"] == made["output"]


def test_redaction_reaches_the_kept_conversation_too() -> None:
    for stack in _stack(redaction={"mode": "redact"}):
        key = stack.key()
        first = stack.post(key, input=[{"role": "user", "content": [
            {"type": "input_text", "text": "mail me at ann@example.com"}]}])  # fmt: skip
        assert first.status_code == 200, first.text
        stack.post(key, input="and then?", previous_response_id=first.json()["id"])
        history = json.dumps(stack.received()[-1]["input"])
        assert "[EMAIL]" in history
        assert "ann@example.com" not in history
        # A part of a type the redactor does not know: refused, not passed unread.
        unknown = [{"role": "user", "content": [{"type": "mystery", "text": "ann@example.com"}]}]
        refused = stack.post(key, input=unknown)
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "input.0.content.0.type"


def test_under_the_charts_eviction_policy_old_responses_go_and_keys_stay(tmp_path: Path) -> None:
    """The chart runs its Redis with maxmemory and volatile-lru (30 days of stored
    responses would otherwise outgrow the pod): responses are evicted oldest first,
    key records (which have no lifetime) never, so every key keeps working."""
    with redis_server(tmp_path) as server:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("maxmemory", "3mb")
        admin.config_set("maxmemory-policy", "volatile-lru")
        engine = FakeEngine()
        with serving(engine.app) as engine_url:
            settings = GatewaySettings(
                engine_url=engine_url, redis_url=server.url, admin_token=ADMIN
            )
            with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
                stack = Stack(client, [engine], "portico")
                key = stack.key()
                ids = []
                for _ in range(160):  # ~8 MB of conversations, ~4.5 MB stored
                    made = stack.post(key, input=os.urandom(25_000).hex())
                    assert made.status_code == 200, made.text
                    ids.append(made.json()["id"])
                assert int(admin.info("stats")["evicted_keys"]) > 0
                assert admin.exists("portico:keys")

                def kept(response_id: str) -> bool:
                    found = client.get(f"/v1/responses/{response_id}", headers=_auth(key))
                    assert found.status_code in (200, 404)
                    return found.status_code == 200

                # Redis' LRU is approximate (it samples): some of the oldest are gone,
                # not necessarily the very first; the newest is kept.
                assert not all(kept(i) for i in ids[:40])
                assert kept(ids[-1])
                assert stack.post(key).status_code == 200  # the key record survived
        admin.close()
