"""The response cache through the real app, with the real Redis (fresh namespace
per test) and the fault-injecting fake engine."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, FakeEngine
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


def test_user_and_stream_do_not_change_the_key(gateway: httpx.Client) -> None:
    assert _post(gateway, user="alice").headers["x-cache"] == "miss"
    assert _post(gateway, user="bob").headers["x-cache"] == "hit"


def _events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.splitlines() if line]


def test_stream_is_stored_and_replayed_as_stream_and_as_body(gateway: httpx.Client) -> None:
    fresh = _post(gateway, stream=True)
    assert fresh.headers["x-cache"] == "miss"
    replayed = _post(gateway, stream=True)
    assert replayed.headers["x-cache"] == "hit"
    assert replayed.headers["content-type"].startswith("text/event-stream")
    text = lambda events: "".join(  # noqa: E731
        json.loads(e)["choices"][0]["text"] for e in events if e != "[DONE]"
    )
    assert text(_events(replayed.text)) == text(_events(fresh.text)) == "t0t1t2"
    assert _events(replayed.text)[-1] == "[DONE]"
    assert '"usage"' not in replayed.text  # not asked for
    asked = _post(gateway, stream=True, stream_options={"include_usage": True})
    assert json.loads(_events(asked.text)[-2])["usage"]["total_tokens"] == 8
    as_body = _post(gateway)
    assert as_body.headers["x-cache"] == "hit"
    assert as_body.json()["choices"][0]["text"] == "t0t1t2"
    assert as_body.json()["usage"]["total_tokens"] == 8


@pytest.mark.parametrize("fault", ["die-mid-stream", "stall-mid-stream"])
def test_broken_streams_are_not_stored(gateway: httpx.Client, fault: str) -> None:
    assert "[DONE]" not in _post(gateway, prompt=fault, stream=True).text
    assert _post(gateway, prompt=fault, stream=True).headers["x-cache"] == "miss"


def test_engine_errors_are_not_stored(gateway: httpx.Client) -> None:
    assert _post(gateway, prompt="error-500").status_code == 500
    assert _post(gateway, prompt="error-500").headers.get("x-cache") != "hit"


def test_client_aborted_stream_is_not_stored(gateway: httpx.Client) -> None:
    with gateway.stream(
        "POST", "/v1/completions", json=_body(prompt="endless", stream=True), headers=_auth()
    ) as response:
        for _ in response.iter_bytes():
            break
    assert _post(gateway, prompt="endless", max_tokens=5).headers["x-cache"] == "miss"


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
