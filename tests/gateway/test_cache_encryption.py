"""Encryption at rest on the real app with the real Redis: cached answers and key
records' names and metadata are unreadable in Redis, rotation keeps entries, and a
value that does not open (wrong, dropped or missing key) is a miss, never a 500."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis
from cryptography.fernet import Fernet

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.recorded_answers import COMPLETE, RecordedEngine, events, load, normalized
from tests.gateway.servers import serving
from tests.gateway.test_cache import KEYS, _auth
from tests.gateway.test_keys_and_limits import (
    ADMIN,
    ADMIN_AUTH,
    REDIS_URL,
    _complete,
    _create,
    prefix,
)

__all__ = ["prefix"]  # the fixture (a fresh Redis namespace), used by name

A, B, C = (Fernet.generate_key().decode() for _ in range(3))
NAME = "recorded_chat_text"
ANSWER = load(NAME)["body"]  # the recorded body, as text
SECRET_WORDS = ("assist", "Hello")  # words of the recorded answer's content


@pytest.fixture
def engine() -> RecordedEngine:
    return RecordedEngine(COMPLETE)


@contextmanager
def _gateway(engine_url: str, prefix: str, keys: list[str]) -> Iterator[httpx.Client]:
    settings = GatewaySettings(
        engine_url=engine_url,
        api_keys=KEYS,
        admin_token=ADMIN,
        redis_url=REDIS_URL,
        redis={"prefix": prefix},
        encryption_keys=",".join(keys),
    )
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def _ask(client: httpx.Client, stream: bool = False) -> tuple[str, Any]:
    answer = load(NAME)
    response = client.post(answer["route"], json={**answer["request"], "stream": stream},
                           headers=_auth())  # fmt: skip
    assert response.status_code == 200, response.text
    return response.headers["x-cache"], events(response.text) if stream else response.json()


def _values(prefix: str, kind: str) -> list[bytes]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return [v for k in client.scan_iter(f"{prefix}:{kind}:*") if (v := client.get(k))]
    finally:
        client.close()


def _readable(value: bytes) -> str:
    """The value as text, and inflated when it inflates: what anyone reading Redis sees."""
    text = value.decode("latin-1")
    try:
        return text + zlib.decompress(value).decode("latin-1")
    except zlib.error:
        return text


def test_cached_answers_are_not_readable_in_redis(engine: RecordedEngine, prefix: str) -> None:
    assert any(w in ANSWER for w in SECRET_WORDS)
    with serving(engine.app) as url, _gateway(url, prefix, [A]) as client:
        fresh = {stream: _ask(client, stream) for stream in (False, True)}
        hits = {stream: _ask(client, stream) for stream in (False, True)}
        stored = _values(prefix, "cache")
    assert len(stored) == 2
    for value in stored:
        assert not any(word in _readable(value) for word in SECRET_WORDS)
    for stream in (False, True):
        assert (fresh[stream][0], hits[stream][0]) == ("miss", "hit")
        assert normalized(hits[stream][1]) == normalized(fresh[stream][1])
    assert engine.generations == 2


def test_rotation_keeps_entries_and_a_dropped_key_is_a_miss(
    engine: RecordedEngine, prefix: str
) -> None:
    with serving(engine.app) as url:
        with _gateway(url, prefix, [A]) as client:
            assert _ask(client)[0] == "miss"
        with _gateway(url, prefix, [B, A]) as client:
            assert _ask(client)[0] == "hit"  # written under A, read under the list
            assert _ask(client, stream=True)[0] == "miss"  # a new entry, sealed under B
        with _gateway(url, prefix, [B]) as client:
            assert _ask(client)[0] == "miss"  # A dropped: its entry is a miss, not a 500
            assert _ask(client, stream=True)[0] == "hit"
            assert _ask(client)[0] == "hit"  # the miss stored the answer again, under B
            metrics = client.get("/metrics").text
    assert re.search(r"^portico_cache_unreadable_total 1\.0$", metrics, re.M), metrics


@pytest.mark.parametrize(
    ("before", "after"),
    [([A], [C]), ([], [A]), ([A], [])],
    ids=["wrong-key", "plain-then-encrypted", "encrypted-then-plain"],
)
def test_entries_that_do_not_open_are_misses(
    engine: RecordedEngine, prefix: str, before: list[str], after: list[str]
) -> None:
    with serving(engine.app) as url:
        with _gateway(url, prefix, before) as client:
            assert _ask(client)[0] == "miss"
        with _gateway(url, prefix, after) as client:
            first, answer = _ask(client)
            assert first == "miss"
            assert answer["object"] == "chat.completion"
            assert answer["choices"]
            assert _ask(client)[0] == "hit"


def test_an_entry_moved_under_another_tenants_key_does_not_open(
    engine: RecordedEngine, prefix: str
) -> None:
    """Someone who can write to Redis copies tenant A's entry under tenant B's key."""
    with serving(engine.app) as url, _gateway(url, prefix, [A]) as client:
        assert _ask(client)[0] == "miss"
        other = {"Authorization": f"Bearer {KEYS[1]}"}
        answer = load(NAME)
        assert (
            client.post(answer["route"], json=answer["request"], headers=other).status_code == 200
        )
        r = redis.Redis.from_url(REDIS_URL)
        try:
            names = sorted(r.scan_iter(f"{prefix}:cache:*"))
            assert len(names) == 2
            r.set(names[1], r.get(names[0]) or b"")
            r.set(names[0], r.get(names[1]) or b"")  # both now hold the same sealed value
        finally:
            r.close()
        x_cache = {client.post(answer["route"], json=answer["request"], headers=h)
                   .headers["x-cache"] for h in (_auth(), other)}  # fmt: skip
    assert x_cache == {"hit", "miss"}  # the copy's authenticated data names the other key


def test_key_records_names_and_metadata_are_not_readable_in_redis(prefix: str) -> None:
    secret_name, secret_value = "Acme Hospital", "patient-intake-team"
    with serving(FakeEngine().app) as url, _gateway(url, prefix, [A]) as client:
        key, key_id = _create(client, name=secret_name, metadata={"team": secret_value}, rpm=7)
        assert _complete(client, key).status_code == 200
        shown = client.get(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).json()
        stored = _values(prefix, "key")
    assert (shown["name"], shown["metadata"], shown["rpm"]) == (
        secret_name, {"team": secret_value}, 7,
    )  # fmt: skip
    assert len(stored) == 1
    assert secret_name not in stored[0].decode()
    assert secret_value not in stored[0].decode()
    assert json.loads(stored[0])["rpm"] == 7  # limits stay in clear


def test_a_key_record_under_a_dropped_key_still_authenticates_and_shows(prefix: str) -> None:
    with serving(FakeEngine().app) as url:
        with _gateway(url, prefix, [A]) as client:
            key, key_id = _create(client, name="Acme", metadata={"team": "x"}, rpm=2)
        with _gateway(url, prefix, [C]) as client:
            assert _complete(client, key).status_code == 200  # limits intact: rpm 2
            assert _complete(client, key).status_code == 200
            assert _complete(client, key).status_code == 429
            shown = client.get(f"/admin/keys/{key_id}", headers=ADMIN_AUTH)
            listed = client.get("/admin/keys", headers=ADMIN_AUTH)
            revoked = client.delete(f"/admin/keys/{key_id}", headers=ADMIN_AUTH)
        with _gateway(url, prefix, [A]) as client:
            again = client.get(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).json()
    assert shown.status_code == 200, shown.text
    assert listed.status_code == 200, listed.text
    assert shown.json()["metadata_unavailable"] is True
    assert shown.json()["metadata"] == {}
    assert "Acme" not in shown.text
    assert revoked.status_code == 200, revoked.text
    # The revocation wrote the record back with its sealed name and metadata untouched.
    assert (again["name"], again["metadata"], again["metadata_unavailable"]) == (
        "Acme", {"team": "x"}, False,
    )  # fmt: skip
    assert again["revoked_at"] is not None


def test_a_key_record_written_in_clear_is_read_then_encrypted_on_its_next_write(
    prefix: str,
) -> None:
    with serving(FakeEngine().app) as url:
        with _gateway(url, prefix, []) as client:
            key, key_id = _create(client, name="Acme")
        assert "Acme" in _values(prefix, "key")[0].decode()
        with _gateway(url, prefix, [A]) as client:
            assert _complete(client, key).status_code == 200
            assert client.get(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).json()["name"] == "Acme"
            assert client.delete(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).status_code == 200
            assert _complete(client, key).status_code == 401
            assert client.get(f"/admin/keys/{key_id}", headers=ADMIN_AUTH).json()["name"] == "Acme"
    assert "Acme" not in _values(prefix, "key")[0].decode()
