"""The response cache through the real app, with the real Redis (fresh namespace
per test), the fault-injecting fake engine, and an engine serving answers
recorded from the real vLLM (tests/gateway/recorded_answers.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.cache import MemoryCacheStore, ResponseCache
from gateway.metrics import Metrics
from gateway.replay import entry_from_body
from gateway.settings import CacheSettings, GatewaySettings
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.recorded_answers import (
    COMPLETE,
    RecordedEngine,
    events,
    load,
    normalized,
    sdk_stream,
    tool_calls,
)
from tests.gateway.servers import serving

KEYS = ["tenant-a-key", "tenant-b-key"]


def _auth(key: str = KEYS[0]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


def _settings(engine_url: str, redis: bool, **extra: Any) -> GatewaySettings:
    common: dict[str, Any] = {
        "engine_url": engine_url,
        "api_keys": KEYS,
        "upstream": {"first_byte_s": 2.0, "stream_idle_s": 1.0},
        **extra,
    }
    if redis:
        common |= {
            "redis_url": "redis://127.0.0.1:6379/0",
            "redis": {"prefix": f"test-cache-{uuid.uuid4().hex[:8]}"},
        }
    return GatewaySettings(**common)


@pytest.fixture(params=["redis", "memory"])
def gateway(request: pytest.FixtureRequest, fake: FakeEngine) -> Iterator[httpx.Client]:
    with (
        serving(fake.app) as engine_url,
        serving(create_app(_settings(engine_url, request.param == "redis"))) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "fine", "temperature": 0, "max_tokens": 5, **extra}


def _post(client: httpx.Client, key: str = KEYS[0], **extra: Any) -> httpx.Response:
    headers = {**_auth(key), **extra.pop("headers", {})}
    return client.post("/v1/completions", json=_body(**extra), headers=headers)


def test_deterministic_request_hits_the_second_time(
    gateway: httpx.Client, fake: FakeEngine
) -> None:
    first, second = _post(gateway), _post(gateway)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert len(fake.received) == 1
    one, two = first.json(), second.json()
    assert one["choices"] == two["choices"]
    assert one["usage"] == two["usage"]
    assert one["id"] != two["id"]  # a replay is a fresh answer to its client


def test_sampled_requests_bypass_unless_asked(gateway: httpx.Client, fake: FakeEngine) -> None:
    sampled = {"temperature": 0.8}
    assert _post(gateway, **sampled).headers["x-cache"] == "bypass"
    assert _post(gateway, **sampled).headers["x-cache"] == "bypass"
    forced = {**sampled, "headers": {"X-Portico-Cache": "on"}}
    assert _post(gateway, **forced).headers["x-cache"] == "miss"
    assert _post(gateway, **forced).headers["x-cache"] == "hit"
    assert _post(gateway, seed=7, temperature=0.8).headers["x-cache"] == "miss"  # seeded


def test_cache_control_no_cache_and_no_store(gateway: httpx.Client, fake: FakeEngine) -> None:
    assert _post(gateway, headers={"Cache-Control": "no-store"}).headers["x-cache"] == "miss"
    assert _post(gateway).headers["x-cache"] == "miss"  # nothing was stored
    assert _post(gateway, headers={"Cache-Control": "no-cache"}).headers["x-cache"] == "bypass"
    assert _post(gateway).headers["x-cache"] == "hit"
    assert len(fake.received) == 3


def test_tenants_never_share_entries(gateway: httpx.Client) -> None:
    assert _post(gateway, key=KEYS[0]).headers["x-cache"] == "miss"
    assert _post(gateway, key=KEYS[1]).headers["x-cache"] == "miss"
    assert _post(gateway, key=KEYS[1]).headers["x-cache"] == "hit"


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "other"}, {"max_tokens": 6}, {"temperature": 0.0001, "seed": 1},
        {"top_p": 0.5}, {"stop": ["x"]}, {"n": 2}, {"logprobs": 1}, {"echo": True},
        {"suffix": "s"}, {"seed": 3}, {"frequency_penalty": 0.1}, {"presence_penalty": 0.1},
        {"top_k": 5}, {"response_format": {"type": "json_object"}}, {"best_of": 2},
        {"some_future_field": 1},
    ],
    ids=lambda change: next(iter(change)),
)  # fmt: skip
def test_every_output_affecting_field_changes_the_key(
    gateway: httpx.Client, change: dict[str, Any]
) -> None:
    assert _post(gateway).headers["x-cache"] in ("miss", "hit")
    assert _post(gateway, **change).headers["x-cache"] == "miss"


def test_user_does_not_change_the_key(gateway: httpx.Client) -> None:
    assert _post(gateway, user="alice").headers["x-cache"] == "miss"
    assert _post(gateway, user="bob").headers["x-cache"] == "hit"


def test_streamed_and_plain_requests_are_different_entries(
    gateway: httpx.Client, fake: FakeEngine
) -> None:
    """An entry is the answer in the shape the engine sent it; one shape is never
    made from the other (that is where tool calls and logprobs were lost)."""
    assert _post(gateway).headers["x-cache"] == "miss"
    assert _post(gateway, stream=True).headers["x-cache"] == "miss"
    assert _post(gateway, stream=False).headers["x-cache"] == "hit"
    assert _post(gateway, stream=None).headers["x-cache"] == "hit"  # null: not streamed
    assert _post(gateway, stream=True).headers["x-cache"] == "hit"
    assert len(fake.received) == 2


def test_stream_options_do_not_change_the_key(gateway: httpx.Client) -> None:
    assert _post(gateway, stream=True).headers["x-cache"] == "miss"
    asked = {"include_usage": True, "continuous_usage_stats": True}
    assert _post(gateway, stream=True, stream_options=asked).headers["x-cache"] == "hit"


def test_stream_is_stored_and_replayed_as_a_stream(gateway: httpx.Client) -> None:
    fresh = _post(gateway, stream=True)
    assert fresh.headers["x-cache"] == "miss"
    replayed = _post(gateway, stream=True)
    assert replayed.headers["x-cache"] == "hit"
    assert replayed.headers["content-type"].startswith("text/event-stream")
    assert events(replayed.text) == events(fresh.text)  # the fake's answers carry no ids
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events(replayed.text)[:-1])
    assert text == "t0t1t2"
    assert events(replayed.text)[-1] == "[DONE]"
    assert '"usage"' not in replayed.text  # not asked for
    asked = _post(gateway, stream=True, stream_options={"include_usage": True})
    assert asked.headers["x-cache"] == "hit"
    assert json.loads(events(asked.text)[-2])["usage"]["total_tokens"] == 8


@pytest.mark.parametrize("fault", ["die-mid-stream", "stall-mid-stream"])
def test_broken_streams_are_not_stored(gateway: httpx.Client, fault: str) -> None:
    assert "[DONE]" not in _post(gateway, prompt=fault, stream=True).text
    assert _post(gateway, prompt=fault, stream=True).headers["x-cache"] == "miss"


def test_engine_errors_are_not_stored(gateway: httpx.Client) -> None:
    assert _post(gateway, prompt="error-500").status_code == 500
    assert _post(gateway, prompt="error-500").headers.get("x-cache") != "hit"


def test_client_aborted_stream_is_not_stored(gateway: httpx.Client) -> None:
    for expected in ("miss", "miss"):  # the second would be a hit had the first been stored
        with gateway.stream(
            "POST", "/v1/completions", json=_body(prompt="endless", stream=True), headers=_auth()
        ) as response:
            assert response.headers["x-cache"] == expected
            for _ in response.iter_bytes():
                break


def test_identical_concurrent_requests_make_one_engine_call(fake: FakeEngine) -> None:
    with (
        serving(fake.app) as engine_url,
        serving(create_app(_settings(engine_url, redis=True))) as url,
    ):

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                body = _body(prompt="slow-ok")
                calls = [
                    client.post("/v1/completions", json=body, headers=_auth()) for _ in range(20)
                ]
                return await asyncio.gather(*calls)

        answers = asyncio.run(burst())
    assert all(a.status_code == 200 for a in answers)
    assert sorted(a.headers["x-cache"] for a in answers).count("hit") == 19
    assert len(fake.received) == 1


def test_redis_down_means_misses_not_failures(fake: FakeEngine) -> None:
    with serving(fake.app) as engine_url:
        settings = _settings(
            engine_url,
            redis=False,
            redis_url="redis://127.0.0.1:1/0",  # nothing listens on port 1
        )
        with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
            answers = [_post(client) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.headers["x-cache"] for a in answers} == {"miss"}


@pytest.fixture(params=["redis", "memory"])
def recorded(request: pytest.FixtureRequest) -> Iterator[tuple[httpx.Client, RecordedEngine]]:
    """The real app in front of an engine serving answers recorded from vLLM."""
    engine = RecordedEngine(COMPLETE)
    with (
        serving(engine.app) as engine_url,
        serving(create_app(_settings(engine_url, request.param == "redis"))) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client, engine


def _ask(client: httpx.Client, name: str, stream: bool, **options: bool) -> tuple[str, Any]:
    """(x-cache, the answer: a body, or a stream's events) for a recorded request."""
    answer = load(name)
    body: dict[str, Any] = {**answer["request"], "stream": stream}
    if options:
        body["stream_options"] = options
    response = client.post(answer["route"], json=body, headers=_auth())
    assert response.status_code == 200, response.text
    return response.headers["x-cache"], events(response.text) if stream else response.json()


@pytest.mark.parametrize("name", COMPLETE)
@pytest.mark.parametrize("first", ["plain", "streamed"])
def test_each_hit_equals_a_fresh_answer_of_its_shape(
    recorded: tuple[httpx.Client, RecordedEngine], name: str, first: str
) -> None:
    """LangChain's standard test: the same request once plain, once streamed."""
    client, engine = recorded
    order = [False, True] if first == "plain" else [True, False]
    fresh = {stream: _ask(client, name, stream) for stream in order}
    hits = {stream: _ask(client, name, stream) for stream in order}
    for stream in order:
        assert (fresh[stream][0], hits[stream][0]) == ("miss", "hit")
        assert normalized(hits[stream][1]) == normalized(fresh[stream][1])
    assert engine.generations == 2


def test_stream_hit_honours_the_clients_own_usage_options(
    recorded: tuple[httpx.Client, RecordedEngine],
) -> None:
    name = "recorded_chat_tool_required"
    for options in (
        {},
        {"include_usage": True},
        {"include_usage": True, "continuous_usage_stats": True},
    ):
        fresh = _ask(client := recorded[0], name, True, **options)
        hit = _ask(client, name, True, **options)
        assert hit[0] == "hit"
        assert normalized(hit[1]) == normalized(fresh[1])
        usages = [json.loads(e).get("usage") for e in hit[1][:-1]]
        assert (usages[-1] is not None) == bool(options)  # the final usage-only chunk
        assert (usages[0] is not None) == ("continuous_usage_stats" in options)


def test_tool_calls_survive_a_streamed_hit(recorded: tuple[httpx.Client, RecordedEngine]) -> None:
    """The finding: after a plain answer with tool_calls was cached, the same request
    streamed ended with finish_reason tool_calls and no tool calls in the OpenAI SDK."""
    client = recorded[0]
    base_url = str(client.base_url).rstrip("/") + "/v1"
    sdk = openai.OpenAI(base_url=base_url, api_key=KEYS[0], max_retries=0)
    request = load("recorded_chat_tool_required")["request"]
    plain = sdk.chat.completions.create(**request)
    assert plain.choices[0].message.tool_calls
    streamed = []
    for _ in range(2):
        raw = sdk.chat.completions.with_raw_response.create(**request, stream=True)
        chunks = [chunk.model_dump_json(exclude_unset=True) for chunk in raw.parse()]
        streamed.append((raw.headers["x-cache"], chunks))
    for _, chunks in streamed:
        snapshot = sdk_stream("/v1/chat/completions", chunks)
        assert snapshot.choices[0].finish_reason == "tool_calls"
        assert snapshot.choices[0].message.tool_calls, "finish_reason tool_calls, no call"
    assert [x_cache for x_cache, _ in streamed] == ["miss", "hit"]
    assert tool_calls(streamed[1][1])[0][3:] == tool_calls(streamed[0][1])[0][3:]
    sdk.close()


def test_stored_values_this_version_did_not_write_are_misses() -> None:
    store = MemoryCacheStore(1 << 20)
    cache = ResponseCache(store, CacheSettings(max_entry_bytes=1000), Metrics())
    body = b'{"id":"cmpl-1","choices":[{"index":0,"text":"ok","finish_reason":"stop"}]}'
    entry = entry_from_body(body)
    assert entry is not None
    asyncio.run(cache.store("key", entry, 60))
    assert asyncio.run(cache.lookup("key")) == entry
    old_format = json.dumps({"body": {"choices": []}, "pieces": None}).encode()
    for value in (
        old_format,  # what the gateway stored before entries were recorded answers
        zlib.compress(old_format),
        zlib.compress(b"a header line that is not JSON\n{}"),
        zlib.compress(b"x" * 2000),  # inflates past max_entry_bytes
        zlib.compress(b'{"shape":"body"}')[:-3],  # cut short
    ):
        asyncio.run(store.set("key", value, 60))
        assert asyncio.run(cache.lookup("key")) is None
