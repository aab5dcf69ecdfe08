"""The operator's engine operations (list, drain, undrain, refresh the model catalog)
and ``GET /version``, on the real app in front of two fake engines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.servers import serving

KEY = "test-key"
ADMIN = "admin-token-for-engine-operation-tests-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


Two = tuple[list[FakeEngine], list[str]]  # the fake engines and their URLs


def _settings(urls: list[str]) -> GatewaySettings:
    return GatewaySettings(
        engines=urls,
        api_keys=[KEY],
        admin_token=ADMIN,
        models_refresh_s=300,
        upstream={"first_byte_s": 5.0, "stream_idle_s": 5.0, "probe_s": 1.0},
        routing={"health_interval_s": 0.2, "strategy": "round_robin"},
    )


@pytest.fixture
def two() -> Iterator[Two]:
    """Two fake engines (engine-0 is "a", engine-1 is "b") and their URLs."""
    engines = [FakeEngine("a"), FakeEngine("b")]
    with ExitStack() as stack:
        yield engines, [stack.enter_context(serving(e.app)) for e in engines]


def _who(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["id"]).removeprefix("cmpl-")


def _engines(client: httpx.Client) -> dict[str, dict[str, Any]]:
    listing = client.get("/admin/engines", headers=ADMIN_AUTH)
    assert listing.status_code == 200, listing.text
    return {e["name"]: e for e in listing.json()["data"]}


def test_engines_are_listed_with_url_models_health_breaker_drain_and_in_flight(
    two: Two,
) -> None:
    with serving(create_app(_settings(two[1]))) as url, httpx.Client(base_url=url) as client:
        assert client.get("/readyz").status_code == 200
        engines = _engines(client)
    assert list(engines) == ["engine-0", "engine-1"]
    first = engines["engine-0"]
    assert first["url"] == two[1][0]
    assert set(first["models"]) == set(two[0][0].models)
    assert first["healthy"] is True
    assert first["breaker"] == "closed"
    assert first["drained"] is False
    assert first["in_flight"] == 0


def test_a_drained_engine_gets_no_new_requests_its_in_flight_ones_finish_and_undrain_restores_it(
    two: Two,
) -> None:
    with serving(create_app(_settings(two[1]))) as url, httpx.Client(base_url=url) as client:
        assert client.get("/readyz").status_code == 200

        async def drain_while_holding() -> tuple[list[httpx.Response], dict[str, Any]]:
            async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as api:
                body = {"model": MODEL, "prompt": "hold"}
                held = [asyncio.create_task(api.post("/v1/completions", json=body))
                        for _ in range(4)]  # fmt: skip
                await asyncio.sleep(0.4)  # all four are on their engines
                drained = await api.post("/admin/engines/engine-0/drain", headers=ADMIN_AUTH)
                return await asyncio.gather(*held), drained.json()

        held, drained = asyncio.run(drain_while_holding())
        assert drained["name"] == "engine-0"
        assert drained["drained"] is True
        assert drained["in_flight"] >= 1  # requests were still on it when it was drained
        assert {_who(r) for r in held} == {"a", "b"}  # the in-flight ones finished
        after = {_who(client.post("/v1/completions", json={"model": MODEL, "prompt": f"{i}"},
                                   headers=AUTH)) for i in range(8)}  # fmt: skip
        assert after == {"b"}
        assert _engines(client)["engine-0"]["drained"] is True
        assert client.get("/readyz").status_code == 200  # engine-1 still serves every model
        undrained = client.post("/admin/engines/engine-0/undrain", headers=ADMIN_AUTH)
        assert undrained.json()["drained"] is False
        back = {_who(client.post("/v1/completions", json={"model": MODEL, "prompt": f"{i}"},
                                  headers=AUTH)) for i in range(8)}  # fmt: skip
        assert back == {"a", "b"}


def test_with_every_engine_drained_the_gateway_is_not_ready_and_requests_get_503(
    two: Two,
) -> None:
    with serving(create_app(_settings(two[1]))) as url, httpx.Client(base_url=url) as client:
        assert client.get("/readyz").status_code == 200
        for name in ("engine-0", "engine-1"):
            assert client.post(f"/admin/engines/{name}/drain", headers=ADMIN_AUTH).is_success
        assert client.get("/readyz").status_code == 503
        refused = client.post("/v1/completions", json={"model": MODEL, "prompt": "x"}, headers=AUTH)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    "name", ["engine-9", "a", "http:%2F%2F127.0.0.1:9", "..%2F..%2Fhealth", "engine-0x"]
)
def test_an_unknown_engine_name_is_a_404_and_never_becomes_a_url(two: Two, name: str) -> None:
    with serving(create_app(_settings(two[1]))) as url, httpx.Client(base_url=url) as client:
        answer = client.post(f"/admin/engines/{name}/drain", headers=ADMIN_AUTH)
        assert answer.status_code == 404
        # A decoded "/" makes the path match no route at all: the router's own 404.
        assert answer.json()["error"]["code"] in ("engine_not_found", "not_found")
        assert not any(e["drained"] for e in _engines(client).values())


def test_refreshing_the_catalog_picks_up_a_model_an_engine_now_serves(
    two: Two,
) -> None:
    with serving(create_app(_settings(two[1]))) as url, httpx.Client(base_url=url) as client:
        assert client.get("/readyz").status_code == 200
        two[0][0].models = (*two[0][0].models, "new-model")
        before = {m["id"] for m in client.get("/v1/models", headers=AUTH).json()["data"]}
        assert "new-model" not in before  # the catalog is fresh for models_refresh_s
        refreshed = client.post("/admin/models/refresh", headers=ADMIN_AUTH)
        assert refreshed.status_code == 200, refreshed.text
        assert "new-model" in {m["id"] for m in refreshed.json()["data"]}
        after = {m["id"] for m in client.get("/v1/models", headers=AUTH).json()["data"]}
        assert "new-model" in after


def test_version_names_the_gateway_and_each_engines_vllm_version_without_addresses(
    two: Two,
) -> None:
    engines, urls = two
    engines[0].version = "0.32.0"
    settings = _settings([urls[0], "http://127.0.0.1:9"])  # engine-1 is unreachable
    with serving(create_app(settings)) as url:
        answers = [httpx.get(url + "/version", timeout=10) for _ in range(10)]
    for answer in answers:
        assert answer.status_code == 200
        body = answer.json()
        assert isinstance(body["version"], str)
        assert body["engines"] == [
            {"name": "engine-0", "vllm_version": "0.32.0"},
            {"name": "engine-1", "vllm_version": None},
        ]
        assert "127.0.0.1" not in answer.text
    assert engines[0].version_asked == 1  # cached: ten calls, one engine request


def test_an_engine_version_that_is_not_a_short_string_is_null(
    two: Two,
) -> None:
    engines, urls = two
    engines[0].version = "x" * 10_000
    engines[1].version = None  # no /version route: 404
    with serving(create_app(_settings(urls))) as url:
        body = httpx.get(url + "/version", timeout=10).json()
    assert [e["vllm_version"] for e in body["engines"]] == [None, None]
