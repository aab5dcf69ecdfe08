"""Routing over several engines: affinity, spill-over, failover, health, backpressure.
The engines are fake (each answer names the engine that gave it); the gateway is the real app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.processes import FakeEngineProcess, metric
from tests.gateway.servers import serving

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SYSTEM = "You are a meticulous assistant for the accounts team. " * 50  # past the 2048 hashed


def _settings(urls: list[str], **routing: Any) -> GatewaySettings:
    defaults = {"health_interval_s": 0.2, "breaker_reset_s": 0.5, "breaker_failures": 1}
    return GatewaySettings(
        engines=urls,
        api_keys=[KEY],
        upstream={"first_byte_s": 5.0, "stream_idle_s": 5.0, "probe_s": 1.0},
        routing={**defaults, **routing},
    )


@pytest.fixture
def fakes() -> Iterator[tuple[list[FakeEngine], list[str]]]:
    engines = [FakeEngine("a"), FakeEngine("b")]
    with ExitStack() as stack:
        urls = [stack.enter_context(serving(e.app)) for e in engines]
        yield engines, urls


def _who(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["id"]).removeprefix("cmpl-")


def _burst(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/completions", json=b) for b in bodies))

    return asyncio.run(run())


def _body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": prompt, **extra}


def test_fake_engines_requests_sharing_a_long_prefix_land_on_one_engine(
    fakes: tuple[list[FakeEngine], list[str]],
) -> None:
    with serving(create_app(_settings(fakes[1]))) as url, httpx.Client(base_url=url) as client:
        shared = {_who(client.post("/v1/completions", json=_body(SYSTEM + f"Q{i}"), headers=AUTH))
                  for i in range(12)}  # fmt: skip
        spread = {_who(client.post("/v1/completions", json=_body(f"{i} other"), headers=AUTH))
                  for i in range(24)}  # fmt: skip
    assert len(shared) == 1
    assert spread == {"a", "b"}  # different prefixes use both engines


def test_fake_engines_session_header_and_user_field_stick_to_one_engine(
    fakes: tuple[list[FakeEngine], list[str]],
) -> None:
    with serving(create_app(_settings(fakes[1]))) as url, httpx.Client(base_url=url) as client:
        by_header = {
            _who(client.post("/v1/completions", json=_body(f"{i}"),
                             headers={**AUTH, "x-session-id": "s-1"}))
            for i in range(10)
        }  # fmt: skip
        by_user = {
            _who(client.post("/v1/completions", json=_body(f"{i}", user="u-7"), headers=AUTH))
            for i in range(10)
        }
    assert len(by_header) == 1
    assert len(by_user) == 1


@pytest.mark.parametrize("strategy", ["round_robin", "least_outstanding"])
def test_fake_engines_without_affinity_a_shared_prefix_is_spread_over_both(
    fakes: tuple[list[FakeEngine], list[str]], strategy: str
) -> None:
    settings = _settings(fakes[1], strategy=strategy)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        engines = [
            _who(client.post("/v1/completions", json=_body(SYSTEM + f"Q{i}"), headers=AUTH))
            for i in range(12)
        ]
    # One at a time, nothing outstanding: both strategies alternate.
    assert engines.count("a") == engines.count("b") == 6


def test_fake_engines_a_hot_prefix_spills_over_when_its_engine_is_at_its_bound(
    fakes: tuple[list[FakeEngine], list[str]],
) -> None:
    with serving(create_app(_settings(fakes[1]))) as url:
        answers = _burst(url, [_body("hold" + SYSTEM) for _ in range(8)])
    engines = [_who(a) for a in answers]
    # Bounded load 1.25: the prefix's engine takes at most ~5 of 8, the rest spill.
    assert set(engines) == {"a", "b"}
    assert max(engines.count("a"), engines.count("b")) <= 5


def test_fake_engine_killed_requests_fail_over_and_the_restarted_engine_is_taken_back(
    fakes: tuple[list[FakeEngine], list[str]], tmp_path: Path
) -> None:
    _, urls = fakes
    c = FakeEngineProcess("c", tmp_path)
    try:
        with (
            serving(create_app(_settings([urls[0], c.url]))) as url,
            httpx.Client(base_url=url, headers=AUTH) as client,
        ):
            before = {_who(client.post("/v1/completions", json=_body(f"{i}"))) for i in range(12)}
            assert before == {"a", "c"}
            c.kill()  # engine "c" is gone: every request still succeeds, on "a"
            during = [_who(client.post("/v1/completions", json=_body(f"{i}"))) for i in range(12)]
            assert set(during) == {"a"}
            assert metric(url, "portico_engine_healthy") == 1  # "a" in, "c" out
            assert client.get("/readyz").status_code == 200  # "a" still covers the model
            c.start()
            deadline = time.monotonic() + 5
            while metric(url, "portico_engine_healthy") < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            after = {_who(client.post("/v1/completions", json=_body(f"{i}"))) for i in range(12)}
        assert after == {"a", "c"}
    finally:
        c.stop()


def test_fake_engine_answering_503_is_retried_on_the_other_and_stays_in_rotation(
    fakes: tuple[list[FakeEngine], list[str]],
) -> None:
    engines, urls = fakes
    engines[0].fail_status = 503
    with serving(create_app(_settings(urls))) as url, httpx.Client(base_url=url) as client:
        answered = {_who(client.post("/v1/completions", json=_body(f"{i}"), headers=AUTH))
                    for i in range(16)}  # fmt: skip
        assert metric(url, "portico_engine_retries_total") >= 1
        assert metric(url, "portico_engine_healthy") == 2  # busy is not broken
    assert answered == {"b"}


def test_fake_engine_500_is_not_retried_and_opens_the_circuit_only_if_health_fails(
    fakes: tuple[list[FakeEngine], list[str]],
) -> None:
    # A 500 may be the request's own doing (a body that trips the engine): the engine
    # stays in rotation while its /health answers, and leaves when that fails too.
    engines, urls = fakes
    engines[0].fail_status = 500
    with serving(create_app(_settings(urls[:1]))) as url, httpx.Client(base_url=url) as client:
        first = client.post("/v1/completions", json=_body("x"), headers=AUTH)
        assert first.status_code == 500  # passed through, never resent
        assert len(engines[0].received) == 1
        time.sleep(0.1)
        second = client.post("/v1/completions", json=_body("x"), headers=AUTH)
        assert second.status_code == 500  # still in rotation: /health said so
        engines[0].healthy = False
        client.post("/v1/completions", json=_body("x"), headers=AUTH)
        deadline = time.monotonic() + 2
        while client.get("/readyz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/readyz").status_code == 503
        third = client.post("/v1/completions", json=_body("x"), headers=AUTH)
        assert third.status_code == 503  # out of rotation
        assert len(engines[0].received) == 3


def test_a_500_from_an_engine_that_then_fails_its_health_check_is_resent_elsewhere(
    fakes: tuple[list[FakeEngine], list[str]],
) -> None:
    # vLLM answers 500 to the requests it held when its engine core dies: nothing
    # reached the client yet, so the request goes to the other engine.
    engines, urls = fakes
    engines[0].fail_status, engines[0].dies_failing = 500, True
    settings = _settings(urls, strategy="round_robin")
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        answers = [
            client.post("/v1/completions", json=_body(str(i)), headers=AUTH) for i in range(4)
        ]
        assert [a.status_code for a in answers] == [200] * 4
        assert {_who(a) for a in answers} == {"b"}
        assert len(engines[0].received) == 1  # tried once, then out of rotation
        assert metric(url, "portico_engine_retries_total") == 1


def test_fake_engine_over_its_cap_requests_wait_bounded_then_503_with_retry_after(
    fakes: tuple[list[FakeEngine], list[str]],
) -> None:
    settings = _settings(fakes[1][:1], max_in_flight=1, queue_size=1, queue_wait_s=0.3)
    started = time.monotonic()
    with serving(create_app(settings)) as url:
        answers = _burst(url, [_body("hold") for _ in range(4)])
        queued_ok = _burst(url, [_body("fine"), _body("fine")])  # a short wait succeeds
        refused = metric(url, "portico_backpressure_rejections_total")
    assert time.monotonic() - started < 5  # nothing waits past queue_wait_s / the hold
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 503, 503, 503]
    for answer in (a for a in answers if a.status_code == 503):
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "engine_unavailable"
    assert [a.status_code for a in queued_ok] == [200, 200]
    assert refused == 3  # two at once (queue full), one after queue_wait_s
