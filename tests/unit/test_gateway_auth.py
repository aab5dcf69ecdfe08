"""Authenticator on in-memory stores: static keys, stored keys, dev-mode access,
and the per-IP brute-force limit."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import random
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.auth import ANONYMOUS, Authenticator, Principal, presented_key
from gateway.errors import AuthenticationFailed, BackendUnavailable, RateLimited, RedisUnavailable
from gateway.jwt_verifier import JWTVerifier
from gateway.keys import KeyHasher, KeyRecord, KeySpec, MemoryKeyStore
from gateway.metrics import Metrics
from gateway.ratelimit import MemoryLimiter
from gateway.settings import GatewaySettings

FIRST = "pk-test-first-4f1c9a"
SECOND = "pk-test-second-77be02"


def _authenticator(**settings: Any) -> tuple[Authenticator, MemoryKeyStore, KeyHasher]:
    config = GatewaySettings(**{"api_keys": [FIRST, SECOND], **settings})
    store, hasher = MemoryKeyStore(), KeyHasher(None)
    auth = Authenticator(
        config, hasher, store, JWTVerifier(config.jwt), MemoryLimiter(60), Metrics()
    )
    return auth, store, hasher


def _run(auth: Authenticator, presented: str | None, ip: str = "10.0.0.1") -> Principal:
    return asyncio.run(auth.authenticate(presented, ip))


def test_static_keys_are_accepted_with_a_digest_prefix_id() -> None:
    auth, _, _ = _authenticator()
    principal = _run(auth, FIRST)
    assert principal.kind == "static"
    assert principal.id == "static_" + hashlib.sha256(FIRST.encode()).hexdigest()[:12]
    assert FIRST not in principal.id
    assert _run(auth, SECOND).id != principal.id


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        (f"Bearer {FIRST}", None, FIRST),
        (f"bearer {FIRST}", None, FIRST),
        (None, SECOND, SECOND),
        ("Basic dXNlcjpwYXNz", SECOND, SECOND),
        ("Bearer    ", None, None),
        (None, None, None),
        ("", "", None),
    ],
)
def test_presented_key_reads_bearer_then_x_api_key(
    authorization: str | None, x_api_key: str | None, expected: str | None
) -> None:
    assert presented_key(authorization, x_api_key) == expected


def test_wrong_and_near_miss_keys_are_refused_without_echo() -> None:
    auth, _, _ = _authenticator()
    for near_miss in ("pk-test-wrong", FIRST[:-1], FIRST + "x", FIRST.upper()):
        with pytest.raises(AuthenticationFailed) as excinfo:
            _run(auth, near_miss, ip=near_miss)  # own IP each: no brute-force block
        assert excinfo.value.code == "invalid_api_key"
        assert near_miss not in excinfo.value.message


def test_missing_key_has_its_own_code() -> None:
    auth, _, _ = _authenticator()
    with pytest.raises(AuthenticationFailed) as excinfo:
        _run(auth, None)
    assert excinfo.value.code == "missing_api_key"


def test_stored_key_maps_its_limits_and_models_to_the_principal() -> None:
    auth, store, hasher = _authenticator()
    secret, record = hasher.new_record(KeySpec(name="t", models=["m"], rpm=5, tpm=50))
    asyncio.run(store.put(record))
    principal = _run(auth, secret)
    assert (principal.kind, principal.id, principal.rpm, principal.tpm) == ("key", record.id, 5, 50)
    assert principal.may_use("m")
    assert not principal.may_use("other")


def test_revoked_and_expired_stored_keys_are_refused() -> None:
    auth, store, hasher = _authenticator()
    secret, record = hasher.new_record(KeySpec(name="t"))
    asyncio.run(store.put(record.model_copy(update={"revoked_at": time.time()})))
    with pytest.raises(AuthenticationFailed, match="revoked"):
        _run(auth, secret)
    secret, record = hasher.new_record(KeySpec(name="t", expires_at=time.time() - 1))
    asyncio.run(store.put(record))
    with pytest.raises(AuthenticationFailed, match="expired"):
        _run(auth, secret)


def test_dev_mode_without_keys_admits_anonymous_callers_only_without_a_key() -> None:
    auth, _, _ = _authenticator(api_keys=[], dev_mode=True)
    assert _run(auth, None) is ANONYMOUS
    with pytest.raises(AuthenticationFailed):
        _run(auth, "pk-anything")


def test_dev_mode_is_not_open_once_keys_exist() -> None:
    auth, _, _ = _authenticator(dev_mode=True)
    with pytest.raises(AuthenticationFailed, match="Missing API key"):
        _run(auth, None)


def test_an_ip_over_its_failure_limit_is_blocked_even_with_a_good_key() -> None:
    auth, _, _ = _authenticator(rate_limits={"auth_failures_per_ip": 3})

    async def scenario() -> list[str]:
        outcomes = []
        for presented in ["bad1", "bad2", "bad3", "bad4", FIRST]:
            try:
                await auth.authenticate(presented, "10.9.9.9")
                outcomes.append("ok")
            except AuthenticationFailed:
                outcomes.append("401")
            except RateLimited:
                outcomes.append("429")
        outcomes.append((await auth.authenticate(FIRST, "10.1.1.1")).kind)
        return outcomes

    assert asyncio.run(scenario()) == ["401", "401", "401", "429", "429", "static"]


# Timing: a guess that shares a long prefix with a real key must not answer faster or
# slower than any other wrong guess. The structural test carries the guarantee (a naive
# early-exit compare leaks nanoseconds, below any in-process measurement); the timing
# test catches the leaks that can be measured: a path taken only by near misses.


def _stored_key(store: MemoryKeyStore, hasher: KeyHasher) -> str:
    secret, record = hasher.new_record(KeySpec(name="timed"))
    asyncio.run(store.put(record))
    return secret


def test_wrong_and_nearly_right_keys_take_the_same_time() -> None:
    auth, store, hasher = _authenticator()
    secret = _stored_key(store, hasher)
    last = "A" if secret[-1] != "A" else "B"
    guesses = {
        "nearly-right": secret[:-1] + last,  # all but the last character right
        "random": "pk-" + secrets.token_urlsafe(32)[: len(secret) - 3],  # same length
        "static-prefix": FIRST[:-1] + "z",  # near miss of a static key
    }
    assert len(guesses["nearly-right"]) == len(guesses["random"]) == len(secret)
    rounds = 2000
    samples: dict[str, list[int]] = {name: [] for name in guesses}

    async def measure() -> None:
        order = list(guesses)
        for i in range(rounds):
            random.shuffle(order)  # interleaved: load drifts hit every guess alike
            for name in order:
                ip = f"10.{i // 250}.{i % 250}.{order.index(name)}"  # no IP limit in play
                started = time.perf_counter_ns()
                with contextlib.suppress(AuthenticationFailed):
                    await auth.authenticate(guesses[name], ip)
                samples[name].append(time.perf_counter_ns() - started)

    asyncio.run(measure())
    medians = {name: statistics.median(values) for name, values in samples.items()}
    spread_us = (max(medians.values()) - min(medians.values())) / 1000
    print(f"medians (us): { {n: round(m / 1000, 2) for n, m in medians.items()} }")
    assert spread_us < 5, medians


def test_keys_are_found_by_digest_and_no_raw_secret_is_kept() -> None:
    """What makes a guess's timing independent of how many characters are right: the
    presented key is hashed first, the store is asked for the digest's id, and only
    digests are compared (secrets.compare_digest)."""
    asked: list[str] = []

    class RecordingStore(MemoryKeyStore):
        async def get(self, key_id: str) -> KeyRecord | None:
            asked.append(key_id)
            return await super().get(key_id)

    config = GatewaySettings(api_keys=[FIRST, SECOND], rate_limits={"auth_failures_per_ip": 99})
    hasher = KeyHasher(None)
    store = RecordingStore()
    auth = Authenticator(
        config, hasher, store, JWTVerifier(config.jwt), MemoryLimiter(60), Metrics()
    )
    secret = _stored_key(store, hasher)
    near = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    with pytest.raises(AuthenticationFailed):
        _run(auth, near)
    assert asked == [KeyHasher.key_id(hasher.digest(near))]
    assert not KeyHasher.key_id(hasher.digest(near)).startswith(secret[:8])
    assert _run(auth, secret).kind == "key"
    held = repr(vars(auth))
    assert FIRST not in held
    assert SECOND not in held


class GatedStore(MemoryKeyStore):
    """Lookups wait at a gate, so a test can hold many of them in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.gate = asyncio.Event()
        self.failure: Exception | None = None

    async def get(self, key_id: str) -> KeyRecord | None:
        self.gets += 1
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return await super().get(key_id)


def _gated() -> tuple[Authenticator, GatedStore, str]:
    config = GatewaySettings(api_keys=[FIRST], rate_limits={"auth_failures_per_ip": 999})
    hasher, store = KeyHasher(None), GatedStore()
    auth = Authenticator(
        config, hasher, store, JWTVerifier(config.jwt), MemoryLimiter(60), Metrics()
    )
    return auth, store, _stored_key(store, hasher)


def test_concurrent_lookups_of_one_key_share_one_store_call_that_no_caller_can_cancel() -> None:
    auth, store, secret = _gated()

    async def scenario() -> None:
        callers = [asyncio.create_task(auth.authenticate(secret, "10.0.0.1")) for _ in range(50)]
        await asyncio.sleep(0.01)
        callers[0].cancel()  # the caller that started the lookup goes away
        await asyncio.sleep(0)
        store.gate.set()
        done = await asyncio.gather(*callers[1:])
        assert store.gets == 1
        assert {p.kind for p in done} == {"key"}
        # Only concurrent callers share: the next request asks the store again,
        # so a revocation is seen as soon as it is written.
        await auth.authenticate(secret, "10.0.0.1")
        assert store.gets == 2

    asyncio.run(scenario())


def test_a_failed_shared_lookup_fails_every_waiter_and_the_next_one_retries() -> None:
    auth, store, secret = _gated()

    async def scenario() -> None:
        store.failure = RedisUnavailable("timeout")
        callers = [asyncio.create_task(auth.authenticate(secret, "10.0.0.1")) for _ in range(5)]
        await asyncio.sleep(0.01)
        store.gate.set()
        outcomes = await asyncio.gather(*callers, return_exceptions=True)
        assert store.gets == 1
        assert all(isinstance(o, BackendUnavailable) for o in outcomes), outcomes
        store.failure = None
        assert (await auth.authenticate(secret, "10.0.0.1")).kind == "key"
        assert store.gets == 2

    asyncio.run(scenario())


SECRET_NAMES = {"presented", "secret", "token", "digest", "given", "wanted", "api_key", "key"}


def _secret_comparisons(source: str) -> list[int]:
    """Lines comparing a secret-named value with ==, != or in (rather than compare_digest)."""

    def named(node: ast.expr) -> bool:
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        return name in SECRET_NAMES

    def equality(node: ast.Compare) -> bool:
        return any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops)

    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Compare)
        and equality(node)
        and any(named(operand) for operand in [node.left, *node.comparators])
    ]


@pytest.mark.parametrize("module", ["auth", "admin", "keys"])
def test_secrets_are_never_compared_with_equality(module: str) -> None:
    path = Path(__file__).parents[2] / "gateway" / f"{module}.py"
    assert _secret_comparisons(path.read_text()) == []


def test_the_secret_comparison_check_finds_a_naive_compare() -> None:
    naive = "def ok(presented, record):\n    return presented == record.digest\n"
    assert _secret_comparisons(naive) == [2]
    assert _secret_comparisons("secrets.compare_digest(presented, wanted)\n") == []
