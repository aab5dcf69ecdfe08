"""The operator API's permissions: every admin route against every permission, for
keys given permissions and for JWTs carrying a ``permissions`` claim, on the real app
with the real Redis in front of a fake engine."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
import redis

from gateway.app import create_app
from gateway.settings import GatewaySettings
from portico import cli as portico_cli
from tests.gateway import rawhttp
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.servers import serving

ADMIN = "admin-token-for-permission-tests-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
SECRET = "jwt-permission-secret-0123456789abcdef-0123456789"
REDIS_URL = "redis://127.0.0.1:6379/0"
PERMISSIONS = ["keys:read", "keys:write", "model_admin", "admin"]


@dataclass(frozen=True)
class AdminRoute:
    method: str
    path: str  # "{key_id}" is replaced by a fresh key's id
    needs: str
    ok: int
    body: dict[str, Any] | None = None


ROUTES = [
    AdminRoute("POST", "/admin/keys", "keys:write", 201, {"name": "made"}),
    AdminRoute("GET", "/admin/keys", "keys:read", 200),
    AdminRoute("GET", "/admin/keys/{key_id}", "keys:read", 200),
    AdminRoute("PATCH", "/admin/keys/{key_id}", "keys:write", 200, {"rpm": 7}),
    AdminRoute("DELETE", "/admin/keys/{key_id}", "keys:write", 200),
    AdminRoute("GET", "/admin/engines", "model_admin", 200),
    AdminRoute("POST", "/admin/engines/engine-0/drain", "model_admin", 200),
    AdminRoute("POST", "/admin/engines/engine-0/undrain", "model_admin", 200),
    AdminRoute("POST", "/admin/models/refresh", "model_admin", 200),
]


@pytest.fixture(scope="module")
def gateway() -> Iterator[httpx.Client]:
    prefix = f"test-perm-{uuid.uuid4().hex[:10]}"
    with serving(FakeEngine().app) as engine_url:
        settings = GatewaySettings(
            engine_url=engine_url,
            redis_url=REDIS_URL,
            admin_token=ADMIN,
            redis={"prefix": prefix},
            jwt={"secret": SECRET, "audience": "portico"},
        )
        with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as c:
            yield c
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _key(client: httpx.Client, permissions: list[str] | None = None) -> tuple[str, str]:
    spec: dict[str, Any] = {"name": "holder"}
    if permissions is not None:
        spec["permissions"] = permissions
    response = client.post("/admin/keys", json=spec, headers=ADMIN_AUTH)
    assert response.status_code == 201, response.text
    return response.json()["key"], response.json()["id"]


def _jwt(permissions: list[str]) -> str:
    claims = {"sub": "ops", "aud": "portico", "exp": int(time.time()) + 300}
    return jwt.encode({**claims, "permissions": permissions}, SECRET, algorithm="HS256")


def _credential(client: httpx.Client, kind: str, permissions: list[str]) -> str:
    return _key(client, permissions)[0] if kind == "key" else _jwt(permissions)


def _call(client: httpx.Client, route: AdminRoute, credential: str) -> httpx.Response:
    path = route.path.replace("{key_id}", _key(client)[1])
    headers = {"Authorization": f"Bearer {credential}"}
    return client.request(route.method, path, json=route.body, headers=headers)


@pytest.mark.parametrize("kind", ["key", "jwt"])
@pytest.mark.parametrize("granted", [[], *([p] for p in PERMISSIONS)], ids=str)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_each_admin_route_is_allowed_exactly_for_its_permission_or_admin(
    gateway: httpx.Client, route: AdminRoute, granted: list[str], kind: str
) -> None:
    response = _call(gateway, route, _credential(gateway, kind, granted))
    if route.needs in granted or "admin" in granted:
        assert response.status_code == route.ok, response.text
    else:
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "permission_denied"
        assert route.needs in error["message"]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_the_admin_token_may_call_every_admin_route(
    gateway: httpx.Client, route: AdminRoute
) -> None:
    assert _call(gateway, route, ADMIN).status_code == route.ok


def test_a_key_with_no_permissions_is_still_an_ordinary_api_key(gateway: httpx.Client) -> None:
    key, _ = _key(gateway, ["keys:read"])
    headers = {"Authorization": f"Bearer {key}"}
    assert gateway.get("/v1/models", headers=headers).status_code == 200


@pytest.mark.parametrize("kind", ["key", "jwt"])
def test_a_caller_cannot_grant_a_permission_it_does_not_hold(
    gateway: httpx.Client, kind: str
) -> None:
    writer = {"Authorization": f"Bearer {_credential(gateway, kind, ['keys:write'])}"}
    for wanted in (["admin"], ["model_admin"], ["keys:read"], ["keys:write", "admin"]):
        refused = gateway.post(
            "/admin/keys", json={"name": "escalate", "permissions": wanted}, headers=writer
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["param"] == "permissions"
    granted = gateway.post(
        "/admin/keys", json={"name": "peer", "permissions": ["keys:write"]}, headers=writer
    )
    assert granted.status_code == 201
    _, target = _key(gateway)
    raised = gateway.patch(f"/admin/keys/{target}", json={"permissions": ["admin"]}, headers=writer)
    assert raised.status_code == 403
    shown = gateway.get(f"/admin/keys/{target}", headers=ADMIN_AUTH).json()
    assert shown["permissions"] is None


def test_a_key_writer_cannot_touch_a_key_holding_more_than_it_does(
    gateway: httpx.Client,
) -> None:
    writer = {"Authorization": f"Bearer {_key(gateway, ['keys:write'])[0]}"}
    _, admin_key = _key(gateway, ["admin"])
    assert gateway.delete(f"/admin/keys/{admin_key}", headers=writer).status_code == 403
    assert (
        gateway.patch(f"/admin/keys/{admin_key}", json={"rpm": 1}, headers=writer).status_code
        == 403
    )
    shown = gateway.get(f"/admin/keys/{admin_key}", headers=ADMIN_AUTH).json()
    assert shown["revoked_at"] is None
    assert shown["rpm"] is None


def test_the_admin_token_and_admin_holders_may_grant_any_permission(
    gateway: httpx.Client,
) -> None:
    _, key_id = _key(gateway, ["admin", "model_admin"])
    shown = gateway.get(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).json()
    assert sorted(shown["permissions"]) == ["admin", "model_admin"]
    holder = {"Authorization": f"Bearer {_jwt(['admin'])}"}
    made = gateway.post("/admin/keys", json={"name": "x", "permissions": ["admin"]}, headers=holder)
    assert made.status_code == 201


def test_an_unknown_permission_is_refused_with_a_400(gateway: httpx.Client) -> None:
    refused = gateway.post(
        "/admin/keys", json={"name": "x", "permissions": ["root"]}, headers=ADMIN_AUTH
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"].startswith("permissions")


def test_an_unknown_jwt_permission_grants_nothing(gateway: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {_jwt(['root', 'keys:*'])}"}
    assert gateway.get("/admin/keys", headers=headers).status_code == 403


@pytest.mark.parametrize("kind", ["key", "jwt"])
def test_a_refused_caller_has_its_403_before_a_byte_of_the_body_is_read(
    gateway: httpx.Client, kind: str
) -> None:
    credential = _credential(gateway, kind, ["keys:read"])
    port = urlsplit(str(gateway.base_url)).port
    assert port is not None
    head = rawhttp.head("POST", "/admin/keys", [
        ("authorization", f"Bearer {credential}"),
        ("content-type", "application/json"),
        ("content-length", "1000"),
    ])  # fmt: skip
    answer = rawhttp.exchange(port, head, b"x" * 1000, trickle_s=0.05, wait_s=10)
    assert answer.status == 403
    assert answer.sent < 20  # answered at once, not after the trickled body


def test_portico_keys_creates_a_key_with_permissions(
    gateway: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["keys", "--url", str(gateway.base_url), "--admin-token", ADMIN]
    code = portico_cli.main([*argv, "create", "--name", "ops", "--permissions", "model_admin"])
    assert code == 0
    created = json.loads(capsys.readouterr().out)
    assert created["permissions"] == ["model_admin"]
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert gateway.get("/admin/engines", headers=headers).status_code == 200
    assert gateway.get("/admin/keys", headers=headers).status_code == 403
