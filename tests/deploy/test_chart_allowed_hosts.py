"""PORTICO_ALLOWED_HOSTS as the chart renders it: the ingress hosts, the gateway Service's
in-cluster names and gateway.allowedHosts; and the real gateway, configured with the
rendered value, answers those names and refuses any other with 400 invalid_host."""

from __future__ import annotations

import os
import re

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.deploy.chart import FULLNAME, NAMESPACE, VALUE_SETS, render, render_error
from tests.gateway.servers import serving

SERVICE = f"{FULLNAME}-gateway"
IN_CLUSTER = [
    SERVICE,
    f"{SERVICE}.{NAMESPACE}",
    f"{SERVICE}.{NAMESPACE}.svc",
    f"{SERVICE}.{NAMESPACE}.svc.cluster.local",
]
PORT_FORWARD = ["localhost", "127.0.0.1", "::1"]  # gateway.allowedHosts' defaults


def _allowed_hosts(values: dict[str, object]) -> str:
    config = render(values).get("ConfigMap", f"{SERVICE}")["data"]
    value: str = config["PORTICO_ALLOWED_HOSTS"]
    return value


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("PORTICO_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    return monkeypatch


def test_without_an_ingress_the_services_names_and_port_forwards_are_allowed() -> None:
    assert _allowed_hosts({}).split(",") == IN_CLUSTER + PORT_FORWARD
    # values.yaml's example ingress host is not allowed while the ingress is off.
    assert "portico.example.com" not in _allowed_hosts({})


def test_the_ingress_hosts_and_extra_names_are_added() -> None:
    values = {
        **VALUE_SETS["ingress-and-monitoring"],
        "gateway": {"allowedHosts": ["gateway.internal.example", "*.apps.example"]},
    }
    hosts = _allowed_hosts(values).split(",")
    assert hosts == [*IN_CLUSTER, "llm.example.com", "gateway.internal.example", "*.apps.example"]


@pytest.mark.parametrize("bad", ["api.example.com:443", "https://api.example.com", "a b"])
def test_the_schema_refuses_a_port_a_scheme_or_junk(bad: str) -> None:
    assert "/gateway/allowedHosts/0" in render_error({"gateway": {"allowedHosts": [bad]}})


@pytest.mark.parametrize("value_set", ["defaults", "ingress-and-monitoring"])
def test_the_gateway_with_the_rendered_value_answers_those_names_only(
    value_set: str, env: pytest.MonkeyPatch
) -> None:
    rendered = render(VALUE_SETS[value_set])
    env.setenv("PORTICO_ALLOWED_HOSTS", _allowed_hosts(VALUE_SETS[value_set]))
    settings = GatewaySettings(
        api_keys=["pk-chart-hosts-0123456789"], engine_url="http://127.0.0.1:9"
    )
    # The base URL the install notes print (port-forward or ingress) must be served.
    noted = re.search(r'base_url="https?://([^/:"]+)', rendered.notes)
    assert noted is not None
    allowed = [*IN_CLUSTER, f"{SERVICE}.{NAMESPACE}.svc:8080", noted.group(1), "localhost:8080"]
    with serving(create_app(settings)) as url:
        for host in allowed:
            answer = httpx.get(url + "/v1/models", headers={"host": host})
            assert answer.status_code == 401, (host, answer.text)  # past the Host check
        for host in ["evil.example", f"{SERVICE}.other-namespace", "10.244.3.4"]:
            answer = httpx.get(url + "/v1/models", headers={"host": host})
            assert answer.status_code == 400
            assert answer.json()["error"]["code"] == "invalid_host"
        # The kubelet's probes carry the pod IP as Host.
        assert httpx.get(url + "/healthz", headers={"host": "10.244.3.4:8080"}).status_code == 200
