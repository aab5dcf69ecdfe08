"""What the gateway does when its Redis hangs (SIGSTOP), dies (SIGKILL) and comes
back: latency stays bounded, nothing answers 500, the failure policy decides
between admitting and 503, and limits hold again once Redis answers, all
without restarting the gateway. Each test owns a private ``redis-server``."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.processes import RedisServer, metric, redis_server
from tests.gateway.servers import serving

ADMIN = "admin-token-for-tests-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
# A key from settings: authenticating it needs no Redis, so requests with it
# reach the rate limiter even while Redis is down (the limiter's failure path).
STATIC_KEY = "static-key-for-chaos-tests"
# Far above the ~100 ms a request takes while Redis hangs (two 50 ms timeouts
# before the breaker opens, nothing after): a hang must not become a slow gateway.
MAX_LATENCY_S = 1.0


@pytest.fixture
def engine_url() -> Iterator[str]:
    with serving(FakeEngine().app) as url:
        yield url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


def _settings(
    engine_url: str, server: RedisServer, policy: Literal["open", "closed"]
) -> GatewaySettings:
    return GatewaySettings(
        engine_url=engine_url,
        redis_url=server.url,
        admin_token=ADMIN,
        api_keys=[STATIC_KEY],
        redis={"prefix": f"chaos-{uuid.uuid4().hex[:10]}", "failure_policy": policy},
        # A long window, so nothing ages out during a test; a default rpm, so the
        # static key is limited too (high: it never refuses here).
        rate_limits={"window_s": 600, "default_rpm": 1000},
    )


@contextmanager
def _gateway(settings: GatewaySettings) -> Iterator[httpx.Client]:
    """The real app on a socket; the client's timeout is far above MAX_LATENCY_S
    so a slow answer fails the latency assertion rather than the client."""
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def _create(gateway: httpx.Client, **spec: Any) -> str:
    response = gateway.post("/admin/keys", json={"name": "chaos", **spec}, headers=ADMIN_AUTH)
    assert response.status_code == 201, response.text
    secret: str = response.json()["key"]
    return secret


def _complete(gateway: httpx.Client, key: str) -> httpx.Response:
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 5}
    return gateway.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def _timed(
    gateway: httpx.Client, keys: list[str], count: int
) -> list[tuple[httpx.Response, float]]:
    """``count`` requests, taking turns with ``keys``, each with its latency."""
    answers = []
    for i in range(count):
        started = time.monotonic()
        response = _complete(gateway, keys[i % len(keys)])
        answers.append((response, time.monotonic() - started))
    return answers


def _assert_fast(answers: list[tuple[httpx.Response, float]], settings: GatewaySettings) -> None:
    latencies = [seconds for _, seconds in answers]
    assert max(latencies) < MAX_LATENCY_S, latencies
    # Once the breaker is open no request waits for Redis at all.
    assert statistics.median(latencies) < settings.redis.timeout_s, latencies


def _assert_idle(gateway: httpx.Client) -> None:
    """Nothing leaked by the fault: the scrape is the one request in flight, and no
    engine slot is held."""
    assert _metric(gateway, "portico_requests_in_flight") == 1
    assert _metric(gateway, "portico_engine_in_flight") == 0


def _metric(gateway: httpx.Client, sample: str) -> float:
    return metric(str(gateway.base_url).rstrip("/"), sample)


def _assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code


def _wait_for_breaker(settings: GatewaySettings) -> None:
    """Sleep until the breaker lets a call through again (no request meanwhile:
    a probe that fails would keep it open for another period)."""
    time.sleep(settings.redis.breaker_reset_s + 0.3)


def test_policy_open_admits_while_redis_hangs_and_limits_return_after(
    engine_url: str, private_redis: RedisServer
) -> None:
    settings = _settings(engine_url, private_redis, "open")
    with _gateway(settings) as gateway:
        key = _create(gateway, rpm=5)
        assert _complete(gateway, key).status_code == 200  # 1 of 5; the key is now known

        private_redis.pause()
        try:
            during = _timed(gateway, [key, STATIC_KEY], 16)  # 8 with the key: over its rpm
        finally:
            private_redis.resume()

        assert [r.status_code for r, _ in during] == [200] * 16
        _assert_fast(during, settings)
        _assert_idle(gateway)
        assert _metric(gateway, "portico_redis_fail_open_total") > 0
        assert _metric(gateway, "portico_redis_errors_total") > 0

        _wait_for_breaker(settings)
        after = [_complete(gateway, key) for _ in range(6)]
        statuses = [r.status_code for r in after]
        # The hang's requests were not counted, the one before it was: at most 4
        # of 5 are left (fewer if a command written just before the hang ran when
        # Redis resumed), then the limit refuses again.
        admitted = statuses.index(429) if 429 in statuses else len(statuses)
        assert 1 <= admitted <= 4, statuses
        assert statuses[admitted:] == [429] * (len(statuses) - admitted)
        _assert_error(after[admitted], 429, "rate_limit_exceeded")
        assert int(after[admitted].headers["retry-after"]) >= 1


def test_policy_closed_answers_503_while_redis_hangs_and_200_after(
    engine_url: str, private_redis: RedisServer
) -> None:
    settings = _settings(engine_url, private_redis, "closed")
    with _gateway(settings) as gateway:
        key = _create(gateway)
        assert _complete(gateway, key).status_code == 200

        private_redis.pause()
        try:
            during = _timed(gateway, [key, STATIC_KEY], 12)
        finally:
            private_redis.resume()

        # Refused by the key store (key) and by the rate limiter (static key) alike.
        for response, _ in during:
            _assert_error(response, 503, "backend_unavailable")
            assert int(response.headers["retry-after"]) >= 1
        _assert_fast(during, settings)
        _assert_idle(gateway)

        # Refused fast while the breaker is open, admitted once it lets a call through.
        statuses = []
        deadline = time.monotonic() + settings.redis.breaker_reset_s + 2
        while time.monotonic() < deadline:
            statuses.append(_complete(gateway, key).status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.1)
        assert set(statuses) <= {200, 503}
        assert statuses[-1] == 200, statuses
        assert _complete(gateway, STATIC_KEY).status_code == 200


def test_redis_killed_and_restarted_is_survived_without_a_500(
    engine_url: str, private_redis: RedisServer
) -> None:
    settings = _settings(engine_url, private_redis, "open")
    with _gateway(settings) as gateway:
        key = _create(gateway)
        assert _complete(gateway, key).status_code == 200

        private_redis.kill()
        during = _timed(gateway, [key, STATIC_KEY], 12)
        unseen = _complete(gateway, "pk-a-key-this-gateway-never-saw")
        private_redis.start()  # same port, no data: every key and counter is gone

        # Keys seen in the last minute keep working; an unknown one cannot be checked.
        assert [r.status_code for r, _ in during] == [200] * 12
        _assert_fast(during, settings)
        _assert_idle(gateway)
        _assert_error(unseen, 503, "backend_unavailable")

        _wait_for_breaker(settings)
        # Redis answers again, and it no longer knows the key: the fallback covers
        # a Redis that cannot answer, never one that says "no such key".
        _assert_error(_complete(gateway, key), 401, "invalid_api_key")
        fresh = _create(gateway, rpm=2)
        assert [_complete(gateway, fresh).status_code for _ in range(3)] == [200, 200, 429]


def test_admin_api_answers_503_not_500_while_redis_is_down(
    engine_url: str, private_redis: RedisServer
) -> None:
    settings = _settings(engine_url, private_redis, "open")
    with _gateway(settings) as gateway:
        created = gateway.post("/admin/keys", json={"name": "chaos"}, headers=ADMIN_AUTH)
        key_id = created.json()["id"]
        base = str(gateway.base_url).rstrip("/")
        private_redis.kill()
        # A connection per call: after a 500 the server drops the connection.
        answers = [
            httpx.request(method, base + path, json=body, headers=ADMIN_AUTH, timeout=10)
            for method, path, body in [
                ("GET", "/admin/keys", None),
                ("GET", f"/admin/keys/{key_id}", None),
                ("POST", "/admin/keys", {"name": "during-outage"}),
                ("DELETE", f"/admin/keys/{key_id}", None),
            ]
        ]
        for answer in answers:
            _assert_error(answer, 503, "backend_unavailable")
