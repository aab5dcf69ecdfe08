"""Byte-level Redis faults: the fault proxy (tests/gateway/faultproxy.py) between the
gateway and a private ``redis-server`` stalls, half-closes or resets the connection
carrying one chosen command (a key lookup, the limiter's admission or its
settlement). Process-level faults (SIGSTOP, kill) are in test_redis_chaos.py.

After each fault: the request was answered (policy open: 200) within a bound; the
faulted connection was dropped by the gateway, not returned to its pool (a reply
left unread there would answer the next command); the limiter's bookkeeping is
consistent (each window's running total is the sum of its entries, one entry per
request) and every reservation settled; and the next requests work."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from gateway.app import create_app
from gateway.ratelimit import ACQUIRE_SCRIPT, SETTLE_SCRIPT
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, USAGE, FakeEngine
from tests.gateway.faultproxy import Action, FaultProxy, fault_proxy
from tests.gateway.processes import RedisServer, metric, redis_server
from tests.gateway.servers import serving

ADMIN = "admin-token-for-tests-0123456789"
MAX_TOKENS = 200  # a reservation is prompt + MAX_TOKENS; settled, an entry is USAGE's total
# The guard's bound on one Redis call when this process's loop lags (it extends the
# 50 ms timeout by the lag, up to 5 s: see redis_guard.py), plus a margin. Measured:
# 5-63 ms, once 1.0 s on a box loaded by a soak run.
MAX_LATENCY_S = 6.0


@dataclass(frozen=True)
class Setup:
    proxy: FaultProxy
    redis: redis.Redis  # straight to the server, not through the proxy
    gateway: httpx.Client
    key: str
    key_id: str
    prefix: str

    def window(self, name: str) -> tuple[int, dict[str, int], int]:
        """(running total, cost by reservation id, entries by time) of one window."""
        base = f"{self.prefix}:rl:{name}:{self.key_id}"
        costs = {k.decode(): int(v) for k, v in self.redis.hgetall(base + ":h").items()}
        return int(self.redis.get(base + ":t") or 0), costs, int(self.redis.zcard(base + ":z"))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with (
        redis_server(tmp_path) as server,
        fault_proxy("127.0.0.1", _port(server)) as (proxy, port),
        serving(FakeEngine().app) as engine_url,
    ):
        prefix = f"faults-{uuid.uuid4().hex[:8]}"
        settings = GatewaySettings(
            engine_url=engine_url,
            redis_url=f"redis://127.0.0.1:{port}/0",
            admin_token=ADMIN,
            redis={"prefix": prefix, "failure_policy": "open"},
            rate_limits={"window_s": 600},
        )
        with (
            serving(create_app(settings)) as url,
            httpx.Client(base_url=url, timeout=10) as gateway,
            redis.Redis.from_url(server.url) as direct,
        ):
            created = gateway.post(
                "/admin/keys",
                json={"name": "faults", "rpm": 1000, "tpm": 1_000_000},
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            assert created.status_code == 201, created.text
            answer = created.json()
            yield Setup(proxy, direct, gateway, answer["key"], answer["id"], prefix)


def _port(server: RedisServer) -> int:
    port = urlsplit(server.url).port
    assert port is not None
    return port


def _complete(setup: Setup) -> tuple[httpx.Response, float]:
    body = {"model": MODEL, "prompt": f"hi {uuid.uuid4().hex}", "max_tokens": MAX_TOKENS}
    started = time.monotonic()
    response = setup.gateway.post(
        "/v1/completions", json=body, headers={"Authorization": f"Bearer {setup.key}"}
    )
    return response, time.monotonic() - started


def _eventually(check: object, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(check())  # type: ignore[operator]


def _assert_consistent(setup: Setup, requests: int) -> None:
    """One entry per admitted request in each window, totals equal to their entries'
    sum, and every token reservation settled to the usage the engine reported."""
    for name in ("rpm", "tpm"):
        total, costs, entries = setup.window(name)
        assert total == sum(costs.values()), (name, total, costs)
        assert entries == len(costs) <= requests, (name, entries, costs)
    _, token_costs, _ = setup.window("tpm")
    assert set(token_costs.values()) <= {USAGE["total_tokens"]}, token_costs


ADMISSION = ACQUIRE_SCRIPT.sha.encode()  # EVALSHA <sha>: the scripts travel by SHA
SETTLEMENT = SETTLE_SCRIPT.sha.encode()
# (action, bytes of the reply relayed before it, what the faulted command contains, id)
FAULTS: list[tuple[Action, int, bytes, str]] = [
    ("stall", 0, b"GET", "key-lookup"),
    ("reset", 0, b"GET", "key-lookup"),
    ("half_close", 4, b"GET", "key-lookup"),  # part of the reply
    ("stall", 0, ADMISSION, "admission"),
    ("reset", 0, ADMISSION, "admission"),
    ("half_close", 0, ADMISSION, "admission"),
    ("stall", 0, SETTLEMENT, "settlement"),
    ("reset", 0, SETTLEMENT, "settlement"),
]


@pytest.mark.parametrize(
    ("action", "after_bytes", "match"),
    [f[:3] for f in FAULTS],
    ids=[f"{a}-after-{n}-bytes-on-the-{what}" for a, n, _, what in FAULTS],
)
def test_a_broken_redis_connection_costs_one_connection_not_a_request(
    setup: Setup, action: Action, after_bytes: int, match: bytes
) -> None:
    assert _complete(setup)[0].status_code == 200  # the key is known; pools are warm
    setup.proxy.arm(action, after_bytes=after_bytes, match=match)
    response, elapsed = _complete(setup)
    assert setup.proxy.stats.faulted == 1, "the fault did not strike: wrong match?"
    setup.proxy.disarm()

    assert response.status_code == 200, response.text  # policy open
    assert elapsed < MAX_LATENCY_S, elapsed
    # The gateway dropped the faulted connection instead of reusing it.
    assert _eventually(lambda: setup.proxy.stats.faulted_open == 0), setup.proxy.stats
    after = [_complete(setup)[0].status_code for _ in range(5)]
    assert after == [200] * 5
    _assert_consistent(setup, requests=7)
    failed_open = metric(str(setup.gateway.base_url).rstrip("/"), "portico_redis_fail_open_total")
    print(f"{action} on {match[:12]!r}: 200 in {elapsed * 1000:.0f} ms; failed open {failed_open}")
