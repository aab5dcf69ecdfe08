"""PORTICO_ALLOWED_HOSTS: a request whose Host header names no allowed host is refused
with an OpenAI-shaped 400 before any route runs (the engine hears nothing); probes and
scrapes (which send the pod IP as Host) are answered whatever the Host; a trailing slash
is a 404, never a redirect that echoes the Host into Location. The gateway is the real
app on a real socket in front of the fake engine."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import ValidationError

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway import rawhttp
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.servers import serving

KEY = "pk-allowed-hosts-tests-0123456789"
ALLOWED = "api.example.com, *.corp.example"
AUTH = {"authorization": f"Bearer {KEY}"}
COMPLETION = {"model": MODEL, "prompt": "hi", "max_tokens": 2}


@dataclass
class Gateway:
    url: str
    port: int
    engine: FakeEngine


def _settings(engine_url: str, allowed: str | None) -> GatewaySettings:
    extra = {} if allowed is None else {"allowed_hosts": allowed}
    return GatewaySettings(engine_url=engine_url, api_keys=[KEY], **extra)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    engine = FakeEngine()
    with (
        serving(engine.app) as engine_url,
        serving(create_app(_settings(engine_url, ALLOWED))) as url,
    ):
        yield Gateway(url, int(url.rsplit(":", 1)[1]), engine)


def _complete(gateway: Gateway, host: str) -> httpx.Response:
    headers = {**AUTH, "host": host}
    return httpx.post(gateway.url + "/v1/completions", json=COMPLETION, headers=headers)


def _assert_refused(answer: httpx.Response) -> None:
    assert answer.status_code == 400
    assert answer.json() == {
        "error": {
            "message": "The Host header names no host this gateway serves.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_host",
        }
    }
    assert "location" not in answer.headers


@pytest.mark.parametrize("host", ["api.example.com", "a.corp.example", "x.y.corp.example"])
def test_a_listed_host_is_served(gateway: Gateway, host: str) -> None:
    answer = _complete(gateway, host)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == "cmpl-fake"


@pytest.mark.parametrize(
    "host",
    ["API.Example.COM:443", "api.example.com:8080", "api.example.com.", "A.Corp.Example:80"],
)
def test_port_case_and_a_trailing_dot_do_not_matter(gateway: Gateway, host: str) -> None:
    assert _complete(gateway, host).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "api.example.com.evil.example",
        "corp.example",  # a wildcard covers subdomains, not the bare domain
        "evilcorp.example",
        "10.0.0.7:8080",
        "",
    ],
)
def test_any_other_host_gets_an_openai_400_and_the_engine_hears_nothing(
    gateway: Gateway, host: str
) -> None:
    before = len(gateway.engine.received)
    _assert_refused(_complete(gateway, host))
    # Refused before authentication too: no key needed to be told, nothing else learnt.
    _assert_refused(httpx.get(gateway.url + "/v1/models", headers={"host": host}))
    assert len(gateway.engine.received) == before


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/models HTTP/1.0\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nhost: api.example.com\r\nhost: evil.example\r\n\r\n",
    ],
    ids=["no-host", "two-hosts"],
)
def test_a_missing_or_repeated_host_header_is_refused(gateway: Gateway, head: bytes) -> None:
    answer = rawhttp.exchange(gateway.port, head)
    assert answer.status == 400
    assert b'"invalid_host"' in answer.body


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_scrapes_by_pod_ip_are_answered_whatever_the_host(
    gateway: Gateway, path: str
) -> None:
    deadline = time.monotonic() + 10  # /readyz waits for the first engine health check
    while True:
        answer = httpx.get(gateway.url + path, headers={"host": "10.244.1.17:8080"})
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("host", ["api.example.com", "evil.example"])
def test_a_trailing_slash_is_an_openai_404_or_400_never_a_redirect(
    gateway: Gateway, host: str
) -> None:
    answer = httpx.get(gateway.url + "/v1/models/", headers={**AUTH, "host": host})
    assert "location" not in answer.headers
    if host == "evil.example":
        _assert_refused(answer)
    else:
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"


def test_unset_any_host_is_served_and_no_redirect_echoes_it() -> None:
    engine = FakeEngine()
    with serving(engine.app) as engine_url, serving(create_app(_settings(engine_url, None))) as url:
        headers = {**AUTH, "host": "evil.example"}
        answer = httpx.post(url + "/v1/completions", json=COMPLETION, headers=headers)
        assert answer.status_code == 200
        slash = httpx.get(url + "/healthz/", headers=headers)
        assert slash.status_code == 404
        assert "evil.example" not in slash.headers.get("location", "")


@pytest.mark.parametrize(
    ("allowed", "dev_mode", "warned"),
    [("", False, True), ("", True, False), ("api.example.com", False, False)],
)
def test_start_up_warns_when_every_host_is_accepted_outside_dev_mode(
    caplog: pytest.LogCaptureFixture, allowed: str, dev_mode: bool, warned: bool
) -> None:
    settings = GatewaySettings(
        engine_url="http://127.0.0.1:9", api_keys=[KEY], allowed_hosts=allowed, dev_mode=dev_mode
    )
    with caplog.at_level(logging.WARNING, logger="portico.gateway"), serving(create_app(settings)):
        pass
    assert any("PORTICO_ALLOWED_HOSTS" in r.getMessage() for r in caplog.records) == warned


def test_patterns_are_normalised_and_bad_ones_stop_start_up() -> None:
    settings = GatewaySettings(
        dev_mode=True, allowed_hosts=" API.example.com ,*.Corp.example, [::1]"
    )
    assert settings.allowed_hosts == ["api.example.com", "*.corp.example", "::1"]
    assert GatewaySettings(dev_mode=True, allowed_hosts="*").allowed_hosts == ["*"]
    for bad in [
        "exa mple.com",
        "*.",
        "api.*.example.com",
        "foo*.example.com",
        "api.example.com:443",
    ]:
        with pytest.raises(ValidationError, match="PORTICO_ALLOWED_HOSTS"):
            GatewaySettings(dev_mode=True, allowed_hosts=bad)
