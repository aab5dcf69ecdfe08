"""Keys, the admin API, per-key permissions and limits, on the real app with
the real Redis (a fresh namespace per test) in front of the fake engine."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, OTHER_MODEL, USAGE, FakeEngine
from tests.gateway.servers import serving

ADMIN = "admin-token-for-tests-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{name}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def engine_url() -> Iterator[str]:
    with serving(FakeEngine().app) as url:
        yield url


def _gateway(engine_url: str, prefix: str, **extra: Any) -> Iterator[httpx.Client]:
    settings = GatewaySettings(
        engine_url=engine_url,
        redis_url=REDIS_URL,
        admin_token=ADMIN,
        redis={"prefix": prefix},
        **extra,
    )
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


@pytest.fixture
def gateway(engine_url: str, prefix: str) -> Iterator[httpx.Client]:
    yield from _gateway(engine_url, prefix)


def _create(client: httpx.Client, **spec: Any) -> tuple[str, str]:
    response = client.post("/admin/keys", json={"name": "test", **spec}, headers=ADMIN_AUTH)
    assert response.status_code == 201, response.text
    return response.json()["key"], response.json()["id"]


def _complete(client: httpx.Client, key: str, **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "prompt": "fine", "max_tokens": 5, **body}
    return client.post("/v1/completions", json=payload, headers={"Authorization": f"Bearer {key}"})


def test_created_key_works_and_its_secret_is_never_shown_again(
    gateway: httpx.Client, prefix: str
) -> None:
    key, key_id = _create(gateway)
    assert key.startswith("pk-")
    assert _complete(gateway, key).status_code == 200
    listing = gateway.get("/admin/keys", headers=ADMIN_AUTH).text
    shown = gateway.get(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).text
    for text in (listing, shown):
        assert key_id in text
        assert key not in text
        assert "digest" not in text
    stored = redis.Redis.from_url(REDIS_URL)
    try:
        raw = b"".join(stored.get(k) or b"" for k in stored.scan_iter(f"{prefix}:key:*"))
    finally:
        stored.close()
    assert key.encode() not in raw  # only the digest is at rest
    assert json.loads(raw)["digest"]


def test_key_is_accepted_as_x_api_key_but_not_from_the_url(gateway: httpx.Client) -> None:
    key, _ = _create(gateway)
    body = {"model": MODEL, "prompt": "fine"}
    assert gateway.post("/v1/completions", json=body, headers={"X-API-Key": key}).status_code == 200
    in_url = gateway.post(f"/v1/completions?api_key={key}&key={key}", json=body)
    assert in_url.status_code == 401
    assert in_url.json()["error"]["code"] == "missing_api_key"


def test_wrong_and_missing_keys_are_401_in_openai_shape(gateway: httpx.Client) -> None:
    wrong = _complete(gateway, "pk-wrong")
    assert wrong.status_code == 401
    assert set(wrong.json()["error"]) == {"message", "type", "param", "code"}
    missing = gateway.post("/v1/completions", json={"model": MODEL, "prompt": "x"})
    assert missing.json()["error"]["code"] == "missing_api_key"


def test_expired_and_revoked_keys_are_refused(gateway: httpx.Client) -> None:
    expired, _ = _create(gateway, expires_at=time.time() - 1)
    assert _complete(gateway, expired).status_code == 401
    key, key_id = _create(gateway)
    assert gateway.delete(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).json()["revoked_at"]
    refused = _complete(gateway, key)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]


def test_admin_api_refuses_ordinary_keys_and_strangers(gateway: httpx.Client) -> None:
    key, _ = _create(gateway)
    as_key = gateway.get("/admin/keys", headers={"Authorization": f"Bearer {key}"})
    assert as_key.status_code == 403
    assert as_key.json()["error"]["type"] == "permission_denied"
    assert gateway.get("/admin/keys").status_code == 401
    assert gateway.post("/admin/keys", json={"name": "x"}).status_code == 401


def test_admin_update_changes_limits_and_validates(gateway: httpx.Client) -> None:
    _, key_id = _create(gateway, rpm=10)
    updated = gateway.patch(f"/admin/keys/{key_id}", json={"rpm": 20}, headers=ADMIN_AUTH)
    assert updated.json()["rpm"] == 20
    bad = gateway.patch(f"/admin/keys/{key_id}", json={"rpm": -1}, headers=ADMIN_AUTH)
    assert bad.status_code == 400
    assert gateway.get("/admin/keys/key_nope", headers=ADMIN_AUTH).status_code == 404


def test_model_allowlist_is_403_and_narrows_the_model_list(gateway: httpx.Client) -> None:
    key, _ = _create(gateway, models=["some-other-model"])
    refused = _complete(gateway, key)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    listed = gateway.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    assert listed["data"] == []
    allowed, _ = _create(gateway, models=[MODEL])
    listed = gateway.get("/v1/models", headers={"Authorization": f"Bearer {allowed}"}).json()
    assert [m["id"] for m in listed["data"]] == [MODEL]


def test_model_retrieve_answers_only_models_the_key_may_use(gateway: httpx.Client) -> None:
    """``client.models.retrieve``: the listing's card; a model outside the key's allow-list
    is the same 404 as a model that does not exist."""
    allowed, _ = _create(gateway, models=[MODEL])
    card = gateway.get(f"/v1/models/{MODEL}", headers={"Authorization": f"Bearer {allowed}"})
    assert card.status_code == 200
    assert (card.json()["id"], card.json()["object"]) == (MODEL, "model")
    other, _ = _create(gateway, models=["some-other-model"])
    for key, model in ((other, MODEL), (allowed, "no/such-model"), (other, "some-other-model")):
        refused = gateway.get(f"/v1/models/{model}", headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code == 404, model
        assert refused.json()["error"]["code"] == "model_not_found"
        assert refused.json()["error"]["param"] == "model"
    assert gateway.get(f"/v1/models/{MODEL}").status_code == 401


def test_per_key_max_tokens_cap_is_a_400(gateway: httpx.Client) -> None:
    key, _ = _create(gateway, max_tokens=16)
    response = _complete(gateway, key, max_tokens=17)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"


def test_rpm_limit_gives_429_with_retry_after_and_openai_headers(gateway: httpx.Client) -> None:
    key, _ = _create(gateway, rpm=3)
    answers = [_complete(gateway, key) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers[:3]] == ["2", "1", "0"]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    refused = answers[3]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_tokens_are_reserved_then_settled_to_the_engines_usage(gateway: httpx.Client) -> None:
    key, key_id = _create(gateway, tpm=1000)
    first = _complete(gateway, key, max_tokens=100)
    assert first.status_code == 200
    reserved = 1000 - int(first.headers["x-ratelimit-remaining-tokens"])
    assert reserved > 100  # the prompt estimate plus max_tokens, before the answer
    second = _complete(gateway, key, max_tokens=100)
    # The first request was settled to its real usage (8 tokens) before the second.
    assert (
        1000 - int(second.headers["x-ratelimit-remaining-tokens"])
        == USAGE["total_tokens"] + reserved
    )
    shown = gateway.get(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).json()
    assert shown["usage_tokens"] == 2 * USAGE["total_tokens"]


def test_request_larger_than_the_tpm_limit_is_refused(gateway: httpx.Client) -> None:
    key, _ = _create(gateway, tpm=50)
    refused = _complete(gateway, key, max_tokens=100)
    assert refused.status_code == 429
    assert "lower max_tokens" in refused.json()["error"]["message"]


def test_streams_are_charged_and_the_usage_chunk_hidden_unless_asked(
    gateway: httpx.Client,
) -> None:
    key, key_id = _create(gateway)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL, "prompt": "fine", "stream": True}
    plain = gateway.post("/v1/completions", json=body, headers=headers).text
    assert '"usage"' not in plain
    asked = {**body, "stream_options": {"include_usage": True}}
    with_usage = gateway.post("/v1/completions", json=asked, headers=headers).text
    assert '"usage"' in with_usage
    shown = gateway.get(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).json()
    assert shown["usage_tokens"] == 2 * USAGE["total_tokens"]


def test_spent_budget_is_429_insufficient_quota_without_sdk_retry(gateway: httpx.Client) -> None:
    key, _ = _create(gateway, budget_tokens=40)
    assert _complete(gateway, key, max_tokens=10).status_code == 200  # settles to 8
    refused = _complete(gateway, key, max_tokens=40)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused.headers["x-should-retry"] == "false"


def test_failed_authentications_are_limited_per_ip(engine_url: str, prefix: str) -> None:
    for client in _gateway(engine_url, prefix, rate_limits={"auth_failures_per_ip": 5}):
        key, _ = _create(client)
        statuses = [_complete(client, f"pk-guess-{i}").status_code for i in range(7)]
        assert statuses[:5] == [401] * 5
        assert statuses[5:] == [429, 429]
        # Even the right key is refused from this address while it is blocked.
        blocked = _complete(client, key)
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1


def test_openai_sdk_retries_through_a_429(engine_url: str, prefix: str) -> None:
    for client in _gateway(engine_url, prefix, rate_limits={"window_s": 1.5}):
        key, _ = _create(client, rpm=1)
        sdk = openai.OpenAI(base_url=f"{client.base_url}/v1", api_key=key, max_retries=3)
        first = sdk.completions.with_raw_response.create(model=MODEL, prompt="fine")
        assert first.status_code == 200
        started = time.monotonic()
        second = sdk.completions.with_raw_response.create(model=MODEL, prompt="fine")
        assert second.status_code == 200
        assert second.retries_taken >= 1
        assert time.monotonic() - started >= 0.5  # it waited for the window, as told
        sdk.close()


def _cli(base_url: str, *args: str) -> tuple[int, Any]:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "portico", "keys", "--url", base_url, "--admin-token", ADMIN, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, json.loads(result.stdout) if result.stdout else None


def test_cli_creates_lists_shows_and_revokes_keys(gateway: httpx.Client) -> None:
    url = str(gateway.base_url)
    code, created = _cli(url, "create", "--name", "cli", "--rpm", "5", "--models", MODEL)
    assert code == 0
    assert created["rpm"] == 5
    assert _complete(gateway, created["key"]).status_code == 200
    code, listed = _cli(url, "list")
    assert created["id"] in [k["id"] for k in listed["data"]]
    assert created["key"] not in json.dumps(listed)
    code, shown = _cli(url, "show", created["id"])
    assert shown["usage_tokens"] == USAGE["total_tokens"]
    code, revoked = _cli(url, "revoke", created["id"])
    assert code == 0
    assert revoked["revoked_at"]
    assert _complete(gateway, created["key"]).status_code == 401
    assert _cli(url, "show", "key_missing")[0] == 1


def test_per_model_limits_count_each_model_separately(engine_url: str, prefix: str) -> None:
    for client in _gateway(engine_url, prefix, rate_limits={"per_model": True}):
        key, _ = _create(client, rpm=1)
        assert _complete(client, key).status_code == 200
        assert _complete(client, key, model=OTHER_MODEL).status_code == 200
        assert _complete(client, key).status_code == 429


def test_cache_hit_counts_as_a_request_but_spends_no_tokens(gateway: httpx.Client) -> None:
    key, key_id = _create(gateway, rpm=10, tpm=1000, budget_tokens=100)
    miss = _complete(gateway, key, temperature=0, max_tokens=10)
    hit = _complete(gateway, key, temperature=0, max_tokens=10)
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert hit.headers["x-ratelimit-remaining-requests"] == "8"
    shown = gateway.get(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).json()
    assert shown["usage_tokens"] == USAGE["total_tokens"]  # the miss only


def test_cache_hit_is_served_when_the_token_window_is_full(gateway: httpx.Client) -> None:
    key, _ = _create(gateway, tpm=30)
    assert _complete(gateway, key, temperature=0, max_tokens=10).status_code == 200
    refused = _complete(gateway, key, temperature=0, max_tokens=25)  # a new key: over tpm
    assert refused.status_code == 429
    hit = _complete(gateway, key, temperature=0, max_tokens=10)
    assert hit.status_code == 200
    assert hit.headers["x-cache"] == "hit"
