"""JWT bearer verification: claims, pinned algorithms and a JWKS served over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm
from pydantic import ValidationError

from gateway.errors import AuthenticationFailed
from gateway.jwt_verifier import JWTClaims, JWTVerifier, looks_like_jwt
from gateway.settings import JWTSettings
from tests.conftest import free_port
from tests.gateway.jwt_tokens import (
    JWKSHost,
    PrivateKey,
    SigningKey,
    b64url,
    forge,
    hmac_signer,
    hosted_jwks,
    rsa_signing_key,
)

pytestmark = pytest.mark.anyio

SECRET = "portico-test-hs256-secret-7c1f0e9a2b4d"
DROP = object()  # a claim value meaning "leave this claim out"


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return rsa_signing_key("rsa-1")


@pytest.fixture(scope="module")
def rotated_key() -> SigningKey:
    return rsa_signing_key("rsa-2")


@pytest.fixture(scope="module")
def attacker_key() -> SigningKey:
    return rsa_signing_key("attacker")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey(ec.generate_private_key(ec.SECP256R1()), "ES256", "ec-1")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"sub": "tenant-a", "exp": int(time.time()) + 600, **changes}
    return {name: value for name, value in payload.items() if value is not DROP}


def _hs256(payload: dict[str, Any] | None = None, secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(payload or _payload(), secret, algorithm="HS256", headers=headers or None)


def _verifier(client: httpx.AsyncClient | None = None, **settings: Any) -> JWTVerifier:
    return JWTVerifier(JWTSettings(**settings), client)


async def _refusal(verifier: JWTVerifier, token: str) -> str:
    """Assert the token is refused the documented way; returns the message."""
    with pytest.raises(AuthenticationFailed) as info:
        await verifier.verify(token)
    assert info.value.code == "invalid_token"
    assert info.value.status_code == 401
    # Parts long enough to be unambiguous (a short one like "a" is in any sentence).
    assert all(part not in info.value.message for part in token.split(".") if len(part) >= 8)
    return info.value.message


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JWKSHost]:
    with hosted_jwks() as host:
        yield host


@pytest.fixture
def jwks(jwks_server: JWKSHost) -> JWKSHost:
    jwks_server.reset()
    return jwks_server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


# Settings


@pytest.mark.parametrize(
    ("settings", "enabled"),
    [({}, False), ({"secret": SECRET}, True), ({"jwks_url": "https://idp.example/jwks"}, True)],
)
def test_verification_is_enabled_by_any_key_source(settings: dict[str, Any], enabled: bool) -> None:
    assert JWTSettings(**settings).enabled is enabled


def test_public_key_alone_enables_verification(rsa_key: SigningKey) -> None:
    assert JWTSettings(public_key=rsa_key.public_pem).enabled


def test_short_hs256_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        JWTSettings(secret="x" * 31)


def test_pem_key_as_hs256_secret_is_refused(rsa_key: SigningKey) -> None:
    with pytest.raises(ValidationError, match="looks like a PEM key"):
        JWTSettings(secret=rsa_key.public_pem)


def _pem(key: PrivateKey) -> str:
    return SigningKey(key, "", "").public_pem


def _weak_rsa_pem() -> str:
    # A key too short to trust is the point of the test: it must be refused.
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505


@pytest.mark.parametrize(
    "make_pem",
    [
        lambda: "not a key",
        _weak_rsa_pem,
        lambda: _pem(ec.generate_private_key(ec.SECP384R1())),
    ],
    ids=["garbage", "rsa-1024", "ec-p384"],
)
def test_public_key_must_be_rsa_2048_or_ec_p256(make_pem: Callable[[], str]) -> None:
    with pytest.raises(ValidationError, match="public_key"):
        JWTSettings(public_key=make_pem())


async def test_public_key_with_escaped_newlines_is_accepted(rsa_key: SigningKey) -> None:
    one_line = rsa_key.public_pem.replace("\n", "\\n")
    verifier = _verifier(public_key=one_line)
    assert (await verifier.verify(rsa_key.sign(_payload()))).subject == "tenant-a"


def test_jwks_url_must_be_http() -> None:
    with pytest.raises(ValidationError, match="http"):
        JWTSettings(jwks_url="file:///etc/jwks.json")


def test_jwks_url_without_a_client_is_refused() -> None:
    with pytest.raises(ValueError, match="AsyncClient"):
        _verifier(jwks_url="https://idp.example/jwks")


# Claims


async def test_valid_token_yields_its_claims() -> None:
    exp = int(time.time()) + 300
    payload = _payload(
        exp=exp, models=["m1", "m2"], permissions=["admin", "model_admin"], rpm=60, tpm=10_000
    )
    claims = await _verifier(secret=SECRET).verify(_hs256(payload))
    assert claims == JWTClaims(
        subject="tenant-a",
        models=frozenset({"m1", "m2"}),
        permissions=frozenset({"admin", "model_admin"}),
        rpm=60,
        tpm=10_000,
        expires_at=float(exp),
    )


async def test_absent_optional_claims_mean_all_models_no_permissions_no_limits() -> None:
    claims = await _verifier(secret=SECRET).verify(_hs256())
    assert (claims.models, claims.permissions, claims.rpm, claims.tpm) == (
        None,
        frozenset(),
        None,
        None,
    )


async def test_empty_models_list_grants_no_model() -> None:
    claims = await _verifier(secret=SECRET).verify(_hs256(_payload(models=[])))
    assert claims.models == frozenset()


@pytest.mark.parametrize(
    ("claim", "value", "message"),
    [
        ("models", "m1", "'models' claim must be a list of strings"),
        ("models", ["m1", 2], "'models' claim must be a list of strings"),
        ("models", None, "'models' claim must be a list of strings"),
        ("permissions", "admin", "'permissions' claim must be a list of strings"),
        ("rpm", 0, "'rpm' claim must be a positive integer"),
        ("rpm", -5, "'rpm' claim must be a positive integer"),
        ("rpm", "60", "'rpm' claim must be a positive integer"),
        ("rpm", True, "'rpm' claim must be a positive integer"),
        ("tpm", 1.5, "'tpm' claim must be a positive integer"),
        ("sub", "", "'sub' claim must be a non-empty string"),
        ("sub", 42, "'sub' claim must be a non-empty string"),
        ("exp", "9999999999", "'exp' claim must be a Unix time"),
        ("exp", 10**400, "'exp' claim must be a Unix time"),
    ],
)
async def test_malformed_claims_are_refused(claim: str, value: Any, message: str) -> None:
    token = _hs256(_payload(**{claim: value}))
    assert message in await _refusal(_verifier(secret=SECRET), token)


@pytest.mark.parametrize("claim", ["exp", "sub"])
async def test_exp_and_sub_are_required(claim: str) -> None:
    token = _hs256(_payload(**{claim: DROP}))
    assert f"required '{claim}' claim" in await _refusal(_verifier(secret=SECRET), token)


async def test_expired_token_is_refused() -> None:
    token = _hs256(_payload(exp=int(time.time()) - 120))
    assert "expired" in await _refusal(_verifier(secret=SECRET, leeway_s=30), token)


async def test_expiry_within_leeway_is_accepted() -> None:
    token = _hs256(_payload(exp=int(time.time()) - 10))
    assert (await _verifier(secret=SECRET, leeway_s=30).verify(token)).subject == "tenant-a"


async def test_token_not_valid_yet_is_refused() -> None:
    token = _hs256(_payload(nbf=int(time.time()) + 300))
    assert "not valid yet" in await _refusal(_verifier(secret=SECRET), token)


async def test_audience_is_checked_when_configured() -> None:
    verifier = _verifier(secret=SECRET, audience="portico")
    assert (await verifier.verify(_hs256(_payload(aud="portico")))).subject == "tenant-a"
    assert "audience" in await _refusal(verifier, _hs256(_payload(aud="billing")))
    assert "required 'aud' claim" in await _refusal(verifier, _hs256())


async def test_token_with_audience_is_refused_when_none_is_configured() -> None:
    token = _hs256(_payload(aud="some-other-service"))
    assert "audience" in await _refusal(_verifier(secret=SECRET), token)


async def test_issuer_is_checked_when_configured() -> None:
    verifier = _verifier(secret=SECRET, issuer="https://idp.example")
    ok = _hs256(_payload(iss="https://idp.example"))
    assert (await verifier.verify(ok)).subject == "tenant-a"
    assert "issuer" in await _refusal(verifier, _hs256(_payload(iss="https://evil.example")))
    assert "required 'iss' claim" in await _refusal(verifier, _hs256())


async def test_issuer_is_not_checked_when_unset() -> None:
    token = _hs256(_payload(iss="https://anyone.example"))
    assert (await _verifier(secret=SECRET).verify(token)).subject == "tenant-a"


# Algorithms and keys


async def test_hs256_token_signed_with_another_secret_is_refused() -> None:
    token = _hs256(secret="another-secret-that-is-long-enough-32b")
    assert "signature is invalid" in await _refusal(_verifier(secret=SECRET), token)


@pytest.mark.parametrize("config", ["secret", "public_key"])
async def test_unsigned_alg_none_token_is_refused(config: str, rsa_key: SigningKey) -> None:
    verifier = _verifier(**{config: SECRET if config == "secret" else rsa_key.public_pem})
    token = forge({"alg": "none", "typ": "JWT"}, _payload(), lambda _: b"")
    assert token.endswith(".")
    assert "algorithm is not accepted" in await _refusal(verifier, token)


async def test_stronger_hmac_than_hs256_is_refused_even_with_the_right_secret() -> None:
    secret = SECRET * 2  # HS512 wants 64 bytes, or PyJWT warns while minting
    token = jwt.encode(_payload(), secret, algorithm="HS512")
    assert "algorithm is not accepted" in await _refusal(_verifier(secret=secret), token)


@pytest.mark.parametrize("alg", ["RS512", "PS256"])
async def test_other_rsa_algorithms_are_refused_even_with_the_right_key(
    alg: str, rsa_key: SigningKey
) -> None:
    token = jwt.encode(_payload(), rsa_key.private, algorithm=alg)
    assert "algorithm is not accepted" in await _refusal(
        _verifier(public_key=rsa_key.public_pem), token
    )


@pytest.mark.parametrize("with_secret", [False, True])
async def test_hs256_token_signed_with_the_public_key_pem_is_refused(
    with_secret: bool, rsa_key: SigningKey
) -> None:
    """The classic confusion attack: the public key, which anyone has, used as HMAC secret."""
    settings: dict[str, Any] = {"public_key": rsa_key.public_pem}
    if with_secret:
        settings["secret"] = SECRET
    verifier = _verifier(**settings)
    header = {"alg": "HS256", "typ": "JWT"}
    forged = forge(header, _payload(), hmac_signer(rsa_key.public_pem.encode()))
    await _refusal(verifier, forged)
    if with_secret:  # the forging code itself is sound: with the real secret it verifies
        genuine = forge(header, _payload(), hmac_signer(SECRET.encode()))
        assert (await verifier.verify(genuine)).subject == "tenant-a"


async def test_rs256_token_is_refused_when_only_a_secret_is_configured(
    rsa_key: SigningKey,
) -> None:
    message = await _refusal(_verifier(secret=SECRET), rsa_key.sign(_payload()))
    assert "no public key configured" in message


async def test_secret_and_public_key_each_verify_their_own_algorithm(
    rsa_key: SigningKey,
) -> None:
    verifier = _verifier(secret=SECRET, public_key=rsa_key.public_pem)
    assert (await verifier.verify(_hs256(_payload(sub="hs")))).subject == "hs"
    assert (await verifier.verify(rsa_key.sign(_payload(sub="rs")))).subject == "rs"


async def test_ec_public_key_verifies_es256_and_nothing_else(
    ec_key: SigningKey, rsa_key: SigningKey
) -> None:
    verifier = _verifier(public_key=ec_key.public_pem)
    assert (await verifier.verify(ec_key.sign(_payload()))).subject == "tenant-a"
    assert "does not match" in await _refusal(verifier, rsa_key.sign(_payload()))


async def test_token_signed_by_another_rsa_key_is_refused(
    rsa_key: SigningKey, attacker_key: SigningKey
) -> None:
    token = attacker_key.sign(_payload())
    assert "signature is invalid" in await _refusal(_verifier(public_key=rsa_key.public_pem), token)


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b.c", ".....", "bm90IGpzb24.e30.c2ln", f"{b64url(b'[' * 100_000)}.e30.c2ln"],
    ids=lambda token: token[:24],
)
async def test_malformed_token_is_refused(token: str) -> None:
    assert "malformed" in await _refusal(_verifier(secret=SECRET), token)


async def test_token_header_without_alg_is_refused() -> None:
    token = forge({"typ": "JWT"}, _payload(), hmac_signer(SECRET.encode()))
    assert "algorithm is not accepted" in await _refusal(_verifier(secret=SECRET), token)


def _self_signed_cert(key: SigningKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key.private, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c"])
@pytest.mark.parametrize("kid", ["rsa-1", "attacker"])
async def test_keys_named_or_embedded_in_the_token_header_are_ignored(
    header: str,
    kid: str,
    jwks: JWKSHost,
    client: httpx.AsyncClient,
    rsa_key: SigningKey,
    attacker_key: SigningKey,
) -> None:
    jwks.publish(rsa_key)
    jwks.publish(attacker_key, name="attacker.json")
    value = {
        "jku": jwks.url("attacker.json"),
        "x5u": jwks.url("attacker.pem"),
        "jwk": attacker_key.jwk(),
        "x5c": [_self_signed_cert(attacker_key)],
    }[header]
    token = jwt.encode(
        _payload(), attacker_key.private, algorithm="RS256", headers={"kid": kid, header: value}
    )
    verifier = _verifier(client, jwks_url=jwks.url(), public_key=rsa_key.public_pem)
    await _refusal(verifier, token)
    assert jwks.fetches["attacker.json"] == 0
    assert jwks.fetches["attacker.pem"] == 0


# JWKS


async def test_jwks_keys_verify_tokens_by_kid_from_one_cached_fetch(
    jwks: JWKSHost, client: httpx.AsyncClient, rsa_key: SigningKey, ec_key: SigningKey
) -> None:
    jwks.publish(rsa_key, ec_key)
    verifier = _verifier(client, jwks_url=jwks.url())
    for _ in range(3):
        assert (await verifier.verify(rsa_key.sign(_payload(sub="r")))).subject == "r"
        assert (await verifier.verify(ec_key.sign(_payload(sub="e")))).subject == "e"
    assert jwks.fetches["jwks.json"] == 1


async def test_jwks_key_verifies_only_the_algorithm_of_its_type(
    jwks: JWKSHost, client: httpx.AsyncClient, rsa_key: SigningKey, ec_key: SigningKey
) -> None:
    jwks.publish(ec_key)
    # Signed by the RSA key but naming the EC key's kid: the EC key only verifies ES256.
    token = jwt.encode(_payload(), rsa_key.private, algorithm="RS256", headers={"kid": "ec-1"})
    assert "does not match" in await _refusal(_verifier(client, jwks_url=jwks.url()), token)


async def test_token_without_kid_is_refused_when_only_a_jwks_is_configured(
    jwks: JWKSHost, client: httpx.AsyncClient, rsa_key: SigningKey
) -> None:
    jwks.publish(rsa_key)
    token = jwt.encode(_payload(), rsa_key.private, algorithm="RS256")
    assert "kid" in await _refusal(_verifier(client, jwks_url=jwks.url()), token)


async def test_symmetric_private_and_foreign_jwks_entries_are_skipped(
    jwks: JWKSHost, client: httpx.AsyncClient, rsa_key: SigningKey, attacker_key: SigningKey
) -> None:
    oct_secret = b"a-symmetric-key-in-the-jwks-32-bytes!"
    private_jwk = {**RSAAlgorithm.to_jwk(attacker_key.private, as_dict=True), "kid": "private"}
    jwks.documents["jwks.json"] = {
        "keys": [
            {"kty": "oct", "kid": "sym", "k": b64url(oct_secret)},
            private_jwk,
            {**rsa_key.jwk(), "kid": "rs512", "alg": "RS512"},
            {**rsa_key.jwk(), "kid": "enc", "use": "enc"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not a key",
            rsa_key.jwk(),
        ]
    }
    verifier = _verifier(client, jwks_url=jwks.url())
    assert (await verifier.verify(rsa_key.sign(_payload()))).subject == "tenant-a"
    hs = forge({"alg": "HS256", "kid": "sym"}, _payload(), hmac_signer(oct_secret))
    assert "no shared secret configured" in await _refusal(verifier, hs)
    for kid, signer in [("private", attacker_key), ("rs512", rsa_key), ("enc", rsa_key)]:
        token = jwt.encode(_payload(), signer.private, algorithm="RS256", headers={"kid": kid})
        assert "not in the key set" in await _refusal(verifier, token)


async def test_concurrent_tokens_on_a_cold_cache_share_one_fetch(
    jwks: JWKSHost, client: httpx.AsyncClient, attacker_key: SigningKey, rsa_key: SigningKey
) -> None:
    jwks.publish(rsa_key)
    jwks.delay_s = 0.05  # keeps the first fetch in flight while the others arrive
    verifier = _verifier(client, jwks_url=jwks.url(), jwks_min_refresh_s=60)
    forged = [
        jwt.encode(_payload(), attacker_key.private, "RS256", headers={"kid": uuid.uuid4().hex})
        for _ in range(50)
    ]
    genuine = [rsa_key.sign(_payload(sub=f"t{i}")) for i in range(20)]
    results = await asyncio.gather(
        *(verifier.verify(t) for t in forged + genuine), return_exceptions=True
    )
    assert all(isinstance(result, AuthenticationFailed) for result in results[:50])
    # The genuine tokens waited for the one fetch in flight instead of being refused.
    assert [getattr(result, "subject", result) for result in results[50:]] == [
        f"t{i}" for i in range(20)
    ]
    assert jwks.fetches["jwks.json"] == 1


async def test_unknown_kids_refetch_at_most_once_per_min_interval(
    jwks: JWKSHost, client: httpx.AsyncClient, attacker_key: SigningKey, rsa_key: SigningKey
) -> None:
    jwks.publish(rsa_key)
    verifier = _verifier(client, jwks_url=jwks.url(), jwks_min_refresh_s=0.3)

    async def flood() -> None:
        for _ in range(20):
            kid = uuid.uuid4().hex
            token = jwt.encode(_payload(), attacker_key.private, "RS256", headers={"kid": kid})
            assert "not in the key set" in await _refusal(verifier, token)

    await flood()
    assert jwks.fetches["jwks.json"] == 1
    await asyncio.sleep(0.35)
    await flood()
    assert jwks.fetches["jwks.json"] == 2


async def test_rotated_key_verifies_after_the_min_interval_and_retired_key_stops(
    jwks: JWKSHost, client: httpx.AsyncClient, rsa_key: SigningKey, rotated_key: SigningKey
) -> None:
    jwks.publish(rsa_key)
    verifier = _verifier(client, jwks_url=jwks.url(), jwks_min_refresh_s=0.2)
    assert (await verifier.verify(rsa_key.sign(_payload()))).subject == "tenant-a"
    jwks.publish(rotated_key)
    new_token = rotated_key.sign(_payload(sub="rotated"))
    assert "not in the key set" in await _refusal(verifier, new_token)
    await asyncio.sleep(0.25)
    assert (await verifier.verify(new_token)).subject == "rotated"
    assert "not in the key set" in await _refusal(verifier, rsa_key.sign(_payload()))
    assert jwks.fetches["jwks.json"] == 2


@pytest.mark.parametrize(
    "breakage",
    ["status 500", "not json", "no keys", "keys not a list"],
)
async def test_failed_refresh_refuses_the_token_and_keeps_cached_keys(
    breakage: str,
    jwks: JWKSHost,
    client: httpx.AsyncClient,
    rsa_key: SigningKey,
    rotated_key: SigningKey,
) -> None:
    jwks.publish(rsa_key)
    verifier = _verifier(client, jwks_url=jwks.url(), jwks_min_refresh_s=0.05)
    assert (await verifier.verify(rsa_key.sign(_payload()))).subject == "tenant-a"
    if breakage == "status 500":
        jwks.status = 500
    else:
        jwks.documents["jwks.json"] = {
            "not json": "{not json",
            "no keys": {"keys": []},
            "keys not a list": {"keys": rotated_key.jwk()},
        }[breakage]
    await asyncio.sleep(0.1)
    assert "unavailable" in await _refusal(verifier, rotated_key.sign(_payload()))
    assert (await verifier.verify(rsa_key.sign(_payload(sub="still")))).subject == "still"
    assert jwks.fetches["jwks.json"] == 2


async def test_unreachable_jwks_is_an_authentication_failure(
    client: httpx.AsyncClient, rsa_key: SigningKey
) -> None:
    verifier = _verifier(client, jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json")
    assert "unavailable" in await _refusal(verifier, rsa_key.sign(_payload()))


async def test_slow_jwks_times_out_as_an_authentication_failure(
    jwks: JWKSHost, client: httpx.AsyncClient, rsa_key: SigningKey
) -> None:
    jwks.publish(rsa_key)
    jwks.delay_s = 0.5
    verifier = _verifier(client, jwks_url=jwks.url(), jwks_timeout_s=0.1)
    started = time.monotonic()
    assert "unavailable" in await _refusal(verifier, rsa_key.sign(_payload()))
    assert time.monotonic() - started < 0.4


async def test_jwks_kid_miss_falls_back_to_the_configured_public_key(
    jwks: JWKSHost, client: httpx.AsyncClient, rsa_key: SigningKey, rotated_key: SigningKey
) -> None:
    jwks.publish(rotated_key)
    verifier = _verifier(client, jwks_url=jwks.url(), public_key=rsa_key.public_pem)
    assert (await verifier.verify(rsa_key.sign(_payload(sub="pem")))).subject == "pem"
    assert (await verifier.verify(rotated_key.sign(_payload(sub="jwks")))).subject == "jwks"


# looks_like_jwt


def test_looks_like_jwt_accepts_signed_and_unsigned_tokens(rsa_key: SigningKey) -> None:
    unsigned = forge({"alg": "none"}, _payload(), lambda _: b"")
    assert looks_like_jwt(_hs256())
    assert looks_like_jwt(rsa_key.sign(_payload()))
    assert looks_like_jwt(unsigned)


@pytest.mark.parametrize(
    "token",
    [
        "pk-test-first-4f1c9a",
        "sk-abc.def",
        f"{b64url(b'not json')}.e30.c2ln",
        f"{b64url(json.dumps({'typ': 'JWT'}).encode())}.e30.c2ln",
        f"{b64url(json.dumps(['alg']).encode())}.e30.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30.c2ln.extra",
        "eyJhbGciOiJIUzI1NiJ9..c2ln",
        "a.e30.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30.c2l+",
        f"{b64url(b'[' * 100_000)}.e30.c2ln",
    ],
    ids=lambda token: token[:24],
)
def test_looks_like_jwt_rejects_other_strings(token: str) -> None:
    assert not looks_like_jwt(token)
