"""Engines found through DNS (``dns+http://name:port``, a Kubernetes headless Service):
each address is one engine; addresses that appear join, addresses that vanish leave,
a failed lookup keeps the last answer. Fake engines on 127.0.0.1 and 127.0.0.2 (the
same port, as pods behind one Service) stand for the pods; the resolver is the system's
where a real name can be used (``localhost``) and a scripted one where the answer must
change during the test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest
from pydantic import ValidationError

from gateway.app import create_app
from gateway.discovery import Discovery, EngineSource
from gateway.engines import EnginePool
from gateway.metrics import Metrics
from gateway.settings import GatewaySettings, RoutingSettings, UpstreamTimeouts
from gateway.upstream import build_transport
from tests.conftest import free_port
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.servers import serving

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_entries_parse_into_fixed_urls_and_dns_names() -> None:
    fixed = EngineSource.parse("http://10.0.0.5:8000/")
    assert (fixed.dynamic, fixed.url()) == (False, "http://10.0.0.5:8000")
    dns = EngineSource.parse("dns+https://engine.ns.svc")
    assert (dns.dynamic, dns.host, dns.port) == (True, "engine.ns.svc", 443)
    assert dns.url("fd00::7") == "https://[fd00::7]:443"
    for bad in ("engine:8000", "ftp://engine:21", "dns+tcp://engine:1", "http://:80"):
        with pytest.raises(ValueError, match="expected http"):
            EngineSource.parse(bad)


def test_settings_refuse_a_malformed_engine_entry_at_start_up() -> None:
    with pytest.raises(ValidationError, match="dns\\+http"):
        GatewaySettings(engines="http://a:1,engine-b:8000", api_keys=[KEY])


def test_a_dns_entry_is_every_address_and_a_failed_lookup_keeps_the_last_answer() -> None:
    answers: list[list[str] | Exception] = [
        ["10.0.0.2", "10.0.0.1", "10.0.0.2"],
        OSError("SERVFAIL"),
        ["10.0.0.3"],
    ]

    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("engines", 8000)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    discovery = Discovery(["http://fixed:1", "dns+http://engines:8000"], 1.0, resolver)
    assert discovery.static_urls() == {"http://fixed:1": "engine-0"}

    async def run() -> list[dict[str, str]]:
        return [await discovery.urls() for _ in range(3)]

    first, during_failure, after = asyncio.run(run())
    assert list(first) == ["http://fixed:1", "http://10.0.0.2:8000", "http://10.0.0.1:8000"]
    assert during_failure == first
    assert list(after) == ["http://fixed:1", "http://10.0.0.3:8000"]
    # Names for metrics and logs: stable per address, and never the address itself.
    assert first["http://fixed:1"] == "engine-0"
    assert first["http://10.0.0.1:8000"] == after_name(first, "10.0.0.1")
    assert all(name.startswith("engine-1-") for url, name in first.items() if "10.0" in url)
    assert all("10.0" not in name for name in [*first.values(), *after.values()])


def after_name(named: dict[str, str], address: str) -> str:
    name = named[f"http://{address}:8000"]
    assert name == Discovery.name_of(1, address)
    return name


def test_a_lookup_that_hangs_is_cut_at_the_timeout() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return ["10.0.0.1"]

    discovery = Discovery(["dns+http://engines:8000"], 0.05, resolver)
    assert asyncio.run(asyncio.wait_for(discovery.urls(), 2)) == {}


@pytest.fixture
def pods() -> Iterator[tuple[int, list[FakeEngine]]]:
    """Two fake engines on one port at two loopback addresses, like two pods."""
    port = free_port()
    engines = [FakeEngine("a"), FakeEngine("b")]
    with ExitStack() as stack:
        for engine, host in zip(engines, ("127.0.0.1", "127.0.0.2"), strict=True):
            stack.enter_context(serving(engine.app, port=port, host=host))
        yield port, engines


def test_pool_adds_resolved_engines_and_drops_vanished_ones_with_their_metrics(
    pods: tuple[int, list[FakeEngine]],
) -> None:
    port, _ = pods
    resolved = ["127.0.0.1", "127.0.0.2"]

    async def resolver(host: str, port: int) -> list[str]:
        return list(resolved)

    metrics = Metrics()
    url_a, url_b = f"http://127.0.0.1:{port}", f"http://127.0.0.2:{port}"

    async def run() -> tuple[list[str], list[str], str, str]:
        transport = build_transport(UpstreamTimeouts())
        try:
            discovery = Discovery([f"dns+http://pods:{port}"], 1.0, resolver)
            pool = EnginePool(transport, discovery, UpstreamTimeouts(), RoutingSettings(), metrics)
            assert pool.nodes == []  # nothing before the first lookup
            await pool.discover()
            await asyncio.gather(*(n.check() for n in pool.nodes))
            both = [n.url for n in pool.candidates(MODEL)]
            scrape_both = metrics.render().decode()
            resolved.remove("127.0.0.2")  # pod b deleted
            await pool.discover()
            one = [n.url for n in pool.candidates(MODEL)]
            return both, one, scrape_both, metrics.render().decode()
        finally:
            await transport.aclose()

    both, one, scrape_both, scrape_one = asyncio.run(run())
    assert both == [url_a, url_b]
    assert one == [url_a]
    name_a, name_b = Discovery.name_of(0, "127.0.0.1"), Discovery.name_of(0, "127.0.0.2")
    assert f'engine="{name_b}"' in scrape_both
    assert f'engine="{name_b}"' not in scrape_one  # no label left behind for a gone pod
    assert f'engine="{name_a}"' in scrape_one


def test_gateway_with_a_dns_entry_routes_to_what_the_name_resolves_to(
    pods: tuple[int, list[FakeEngine]],
) -> None:
    port, engines = pods
    settings = GatewaySettings(
        engines=f"dns+http://localhost:{port}",  # the system resolver: 127.0.0.1 here
        api_keys=[KEY],
        routing={"health_interval_s": 0.1, "dns_refresh_s": 0.1},
    )
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        models = client.get("/v1/models")
        answers = [
            client.post("/v1/completions", json={"model": MODEL, "prompt": str(i)})
            for i in range(4)
        ]
        scrape = client.get("/metrics").text
    assert MODEL in [m["id"] for m in models.json()["data"]]
    assert [a.status_code for a in answers] == [200] * 4
    assert len(engines[0].received) == 4  # a, at 127.0.0.1 (what localhost resolves to)
    assert engines[1].received == []
    name = Discovery.name_of(0, "127.0.0.1")
    assert f'portico_engine_healthy{{engine="{name}"}} 1.0' in scrape
    assert "127.0.0.1" not in scrape
