from __future__ import annotations

import hashlib

import pytest

from gateway.auth import ANONYMOUS, KeyRing, Principal
from gateway.errors import AuthenticationFailed

FIRST = "pk-test-first-4f1c9a"
SECOND = "pk-test-second-77be02"


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing([FIRST, SECOND], open_access=False)


def _key_id(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def test_bearer_token_is_accepted(ring: KeyRing) -> None:
    assert ring.authenticate(f"Bearer {FIRST}", None) == Principal(key_id=_key_id(FIRST))


def test_bearer_scheme_is_case_insensitive(ring: KeyRing) -> None:
    assert ring.authenticate(f"bearer {SECOND}", None).key_id == _key_id(SECOND)


def test_x_api_key_header_is_accepted(ring: KeyRing) -> None:
    assert ring.authenticate(None, SECOND).key_id == _key_id(SECOND)


def test_each_key_gets_its_own_id(ring: KeyRing) -> None:
    first = ring.authenticate(f"Bearer {FIRST}", None)
    second = ring.authenticate(None, SECOND)
    assert first.key_id != second.key_id


def test_key_id_is_a_digest_prefix_not_the_secret(ring: KeyRing) -> None:
    principal = ring.authenticate(f"Bearer {FIRST}", None)
    assert len(principal.key_id) == 12
    assert principal.key_id == hashlib.sha256(FIRST.encode()).hexdigest()[:12]
    assert FIRST not in principal.key_id
    assert principal.key_id not in FIRST


def test_wrong_key_is_refused_with_401(ring: KeyRing) -> None:
    with pytest.raises(AuthenticationFailed) as excinfo:
        ring.authenticate("Bearer pk-test-wrong", None)
    assert excinfo.value.status_code == 401
    assert excinfo.value.code == "invalid_api_key"
    assert "pk-test-wrong" not in excinfo.value.message


def test_wrong_bearer_is_not_rescued_by_a_valid_x_api_key(ring: KeyRing) -> None:
    with pytest.raises(AuthenticationFailed):
        ring.authenticate("Bearer pk-test-wrong", FIRST)


def test_key_must_match_exactly(ring: KeyRing) -> None:
    for near_miss in (FIRST[:-1], FIRST + "x", FIRST.upper()):
        with pytest.raises(AuthenticationFailed):
            ring.authenticate(f"Bearer {near_miss}", None)


@pytest.mark.parametrize(
    ("authorization", "x_api_key"),
    [(None, None), ("", ""), ("Bearer ", None), ("Bearer    ", None)],
)
def test_missing_key_has_its_own_code(
    ring: KeyRing, authorization: str | None, x_api_key: str | None
) -> None:
    with pytest.raises(AuthenticationFailed) as excinfo:
        ring.authenticate(authorization, x_api_key)
    assert excinfo.value.status_code == 401
    assert excinfo.value.code == "missing_api_key"


def test_other_authorization_schemes_are_not_read_as_keys(ring: KeyRing) -> None:
    with pytest.raises(AuthenticationFailed) as excinfo:
        ring.authenticate(f"Basic {FIRST}", None)
    assert excinfo.value.code == "missing_api_key"


def test_non_bearer_authorization_falls_back_to_x_api_key(ring: KeyRing) -> None:
    assert ring.authenticate("Basic dXNlcjpwYXNz", FIRST).key_id == _key_id(FIRST)


def test_open_access_without_keys_lets_anyone_in() -> None:
    ring = KeyRing([], open_access=True)
    assert ring.authenticate(None, None) is ANONYMOUS
    assert ring.authenticate("Bearer anything", None) is ANONYMOUS


def test_open_access_is_ignored_once_keys_exist() -> None:
    ring = KeyRing([FIRST], open_access=True)
    with pytest.raises(AuthenticationFailed, match="Missing API key"):
        ring.authenticate(None, None)
    assert ring.authenticate(None, FIRST).key_id == _key_id(FIRST)


def test_no_keys_without_open_access_lets_nobody_in() -> None:
    ring = KeyRing([], open_access=False)
    with pytest.raises(AuthenticationFailed) as excinfo:
        ring.authenticate("Bearer anything", None)
    assert excinfo.value.code == "invalid_api_key"
