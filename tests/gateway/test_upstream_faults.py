"""How the gateway answers when the engine is down, slow, failing or breaks a
stream. A fake engine injects the faults; the gateway is the real app."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import free_port
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.processes import metric
from tests.gateway.servers import serving

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _settings(engine_url: str) -> GatewaySettings:
    return GatewaySettings(
        engine_url=engine_url,
        api_keys=[KEY],
        upstream={"first_byte_s": 1.0, "generation_s": 2.0, "stream_idle_s": 1.0, "probe_s": 1.0},
    )


@pytest.fixture
def engine() -> Iterator[tuple[FakeEngine, str]]:
    fake = FakeEngine()
    with serving(fake.app) as url:
        yield fake, url


@pytest.fixture
def gateway(engine: tuple[FakeEngine, str]) -> Iterator[httpx.Client]:
    with (
        serving(create_app(_settings(engine[1]))) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=30) as client,
    ):
        yield client


def _complete(client: httpx.Client, prompt: str, stream: bool = False) -> httpx.Response:
    return client.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "stream": stream})


def test_engine_down_is_503_in_openai_shape() -> None:
    with (
        serving(create_app(_settings(f"http://127.0.0.1:{free_port()}"))) as url,
        httpx.Client(base_url=url, headers=AUTH) as client,
    ):
        response = _complete(client, "hi")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "engine_unavailable"
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200


def test_slow_first_byte_is_504_after_the_configured_wait(gateway: httpx.Client) -> None:
    started = time.monotonic()
    response = _complete(gateway, "slow-first-byte", stream=True)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "engine_timeout"
    assert time.monotonic() - started < 4  # first_byte_s=1, the fake sleeps 5


def test_a_non_stream_answer_is_504_after_the_generation_limit(gateway: httpx.Client) -> None:
    # vLLM sends a non-stream answer's headers only at its end: generation_s bounds it.
    started = time.monotonic()
    response = _complete(gateway, "slow-first-byte")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "engine_timeout"
    assert 2 <= time.monotonic() - started < 4.5  # generation_s=2, the fake sleeps 5


def test_engine_error_status_and_message_pass_through(gateway: httpx.Client) -> None:
    response = _complete(gateway, "error-500")
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "engine exploded"


def test_engine_busy_is_503_with_retry_after(gateway: httpx.Client) -> None:
    response = _complete(gateway, "busy-503")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def _events(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.text.splitlines() if line]


def test_complete_stream_is_relayed_with_done(gateway: httpx.Client) -> None:
    response = _complete(gateway, "fine", stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert _events(response)[-1] == "[DONE]"
    assert len(_events(response)) == 4


@pytest.mark.parametrize("fault", ["die-mid-stream", "stall-mid-stream"])
def test_broken_stream_ends_with_an_error_event_and_no_done(
    gateway: httpx.Client, fault: str
) -> None:
    broken = metric(str(gateway.base_url).rstrip("/"), "portico_streams_broken_total")
    events = _events(_complete(gateway, fault, stream=True))
    assert "[DONE]" not in events
    after = metric(str(gateway.base_url).rstrip("/"), "portico_streams_broken_total")
    assert after == broken + 1
    assert [json.loads(e)["choices"][0]["text"] for e in events[:3]] == ["t0", "t1", "t2"]
    assert json.loads(events[-1])["error"]["type"] in ("service_unavailable", "timeout")


def test_client_disconnect_closes_the_engine_stream(
    engine: tuple[FakeEngine, str], gateway: httpx.Client
) -> None:
    fake, _ = engine
    body = {"model": MODEL, "prompt": "endless", "stream": True}
    with gateway.stream("POST", "/v1/completions", json=body) as response:
        for _ in response.iter_bytes():
            break
    deadline = time.monotonic() + 5
    while not fake.stream_closed.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.stream_closed.is_set()


def test_body_is_forwarded_byte_for_byte_with_the_gateways_fields_appended(
    engine: tuple[FakeEngine, str], gateway: httpx.Client
) -> None:
    fake, _ = engine
    raw = b'{"model": "fake-model", "prompt": "hi", "vendor_field": {"a": [1, 2]}, "max_tokens": 5}'
    response = gateway.post("/v1/completions", content=raw)
    assert response.status_code == 200
    sent = fake.received[-1]
    assert sent.startswith(raw[:-1] + b",")  # the client's bytes, never re-serialised
    assert json.loads(sent) == {**json.loads(raw), "cache_salt": json.loads(sent)["cache_salt"]}


def test_metrics_count_requests_by_route_model_and_status_class(gateway: httpx.Client) -> None:
    assert _complete(gateway, "fine").status_code == 200
    assert _complete(gateway, "error-500").status_code == 500
    gateway.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    text = gateway.get("/metrics").text
    route = 'route="/v1/completions"'
    assert f'portico_requests_total{{model="{MODEL}",{route},status_class="2xx"}} 1.0' in text
    assert f'portico_requests_total{{model="{MODEL}",{route},status_class="5xx"}} 1.0' in text
    # An unknown model is never a label value: label sets stay bounded.
    assert f'portico_requests_total{{model="none",{route},status_class="4xx"}} 1.0' in text
    assert 'model="nope"' not in text
    assert "portico_requests_in_flight 1.0" in text  # only the scrape itself


def test_access_log_carries_the_request_id_and_never_the_key(
    gateway: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="portico.access"):
        response = gateway.post(
            "/v1/completions",
            json={"model": MODEL, "prompt": "CANARY-PROMPT"},
            headers={"X-Request-Id": "req-42"},
        )
    assert response.headers["x-request-id"] == "req-42"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "portico.access"]
    assert any(line["request_id"] == "req-42" and line["status"] == 200 for line in lines)
    assert KEY not in caplog.text
    assert "CANARY-PROMPT" not in caplog.text
