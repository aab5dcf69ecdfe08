"""JWTs end to end through the real app: claims become the principal's models,
permissions and limits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.servers import serving

SECRET = "jwt-test-secret-0123456789abcdef-0123456789"


def _token(**claims: Any) -> str:
    payload = {"sub": "team-a", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


@pytest.fixture
def gateway() -> Iterator[httpx.Client]:
    with serving(FakeEngine().app) as engine_url:
        settings = GatewaySettings(
            engine_url=engine_url,
            redis_url="redis://127.0.0.1:6379/0",
            redis={"prefix": f"test-jwt-{uuid.uuid4().hex[:8]}"},
            jwt={"secret": SECRET, "audience": "portico"},
        )
        with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
            yield client


def _complete(client: httpx.Client, token: str) -> httpx.Response:
    return client.post(
        "/v1/completions",
        json={"model": MODEL, "prompt": "fine", "max_tokens": 5},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_valid_token_is_a_principal_with_its_rpm(gateway: httpx.Client) -> None:
    token = _token(aud="portico", rpm=2)
    statuses = [_complete(gateway, token).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_models_claim_is_enforced(gateway: httpx.Client) -> None:
    refused = _complete(gateway, _token(aud="portico", models=["other"]))
    assert refused.status_code == 403


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(_token(aud="elsewhere"), id="wrong-audience"),
        pytest.param(_token(aud="portico", exp=int(time.time()) - 120), id="expired"),
        pytest.param(
            jwt.encode({"sub": "x", "aud": "portico"}, SECRET, algorithm="HS256"), id="no-exp"
        ),
        pytest.param(
            jwt.encode(
                {"sub": "x", "aud": "portico", "exp": int(time.time()) + 60},
                None,
                algorithm="none",
            ),
            id="alg-none",
        ),
    ],
)
def test_bad_tokens_are_401_in_openai_shape(gateway: httpx.Client, token: str) -> None:
    response = _complete(gateway, token)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_admin_permission_opens_the_admin_api(gateway: httpx.Client) -> None:
    admin = {"Authorization": f"Bearer {_token(aud='portico', permissions=['admin'])}"}
    created = gateway.post("/admin/keys", json={"name": "from-jwt"}, headers=admin)
    assert created.status_code == 201
    plain = {"Authorization": f"Bearer {_token(aud='portico', permissions=['model_admin'])}"}
    assert gateway.get("/admin/keys", headers=plain).status_code == 403
