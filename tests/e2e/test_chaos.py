"""Chaos between the gateway and the real vLLM engine: a fault-injecting TCP proxy
(tests/gateway/faultproxy.py) stalls, half-closes or resets the engine's
connection before or during an answer, and many clients abort their streams at
once. After each fault the test checks what a production gateway must leave
behind: the status the client saw, nothing cached, no leaked in-flight counter,
token reservation, socket or asyncio task, vLLM no longer generating for it,
and service back without restarting anything.

The gateway is a real process (``uvicorn --factory``) on the real Redis, with
short upstream timeouts so a stall is detected in seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import openai
import psutil
import pytest
import redis

from tests.e2e.conftest import LOG_DIR, MODEL, Stack
from tests.gateway.faultproxy import Action, FaultProxy, fault_proxy
from tests.gateway.processes import gateway_env, gateways, metric

pytestmark = pytest.mark.e2e

ADMIN = "chaos-admin-token-0123456789abcdef"
REDIS_URL = "redis://127.0.0.1:6379/0"
FIRST_BYTE_S = 8.0
STREAM_IDLE_S = 3.0
STREAM_MAX_TOKENS = 300  # the reservation a leaked settle would leave behind
SETTLE_S = 15.0  # how long the checks wait for counters to come back


@dataclass(frozen=True)
class Chaos:
    proxy: FaultProxy
    gateway: str  # the gateway's root URL
    key: str
    key_id: str
    prefix: str
    stack: Stack

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def token_entries(self, client: redis.Redis) -> dict[str, int]:
        """The key's tpm window: each admitted request's cost, by reservation id. A
        request holds its reservation (prompt estimate + max_tokens) until it is
        settled to the tokens really used."""
        entries = client.hgetall(f"{self.prefix}:rl:tpm:{self.key_id}:h")
        return {k.decode(): int(v) for k, v in entries.items()}


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(scope="module")
def chaos(stack: Stack, redis_client: redis.Redis) -> Iterator[Chaos]:
    engine = urlsplit(stack.engine_url)
    assert engine.hostname is not None
    assert engine.port is not None
    prefix = f"chaos-{uuid.uuid4().hex[:8]}"
    with fault_proxy(engine.hostname, engine.port) as (proxy, port):
        env = gateway_env(
            PORTICO_ENGINE_URL=f"http://127.0.0.1:{port}",
            PORTICO_REDIS_URL=REDIS_URL,
            PORTICO_ADMIN_TOKEN=ADMIN,
            PORTICO_REDIS__PREFIX=prefix,
            PORTICO_UPSTREAM__FIRST_BYTE_S=str(FIRST_BYTE_S),
            # A stall before a non-stream answer's headers is the generation limit.
            PORTICO_UPSTREAM__GENERATION_S=str(FIRST_BYTE_S),
            PORTICO_UPSTREAM__STREAM_IDLE_S=str(STREAM_IDLE_S),
            PORTICO_LOG_LEVEL="warning",
        )
        with gateways(1, env, LOG_DIR) as urls:
            created = httpx.post(
                urls[0] + "/admin/keys",
                json={"name": "chaos", "rpm": 10_000, "tpm": 10_000_000},
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=10,
            )
            assert created.status_code == 201, created.text
            yield Chaos(proxy, urls[0], created.json()["key"], created.json()["id"], prefix, stack)
    for key in redis_client.scan_iter(f"{prefix}:*"):
        redis_client.delete(key)


def _process_serving(url: str) -> psutil.Process:
    """The process listening on ``url``'s port (the gateway child)."""
    port = urlsplit(url).port
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if any(c.laddr.port == port and c.status == "LISTEN" for c in proc.net_connections()):
                return proc
    raise AssertionError(f"no process listens on {url}")


def _eventually(check: Callable[[], bool], timeout_s: float = SETTLE_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def _assert_nothing_leaked(chaos: Chaos, client: redis.Redis, before: dict[str, int]) -> None:
    """What every fault must leave behind: nothing. ``before``: the tpm entries
    before the fault."""
    gateway = chaos.gateway
    assert _eventually(lambda: chaos.proxy.stats.faulted_open == 0), (
        f"the gateway kept {chaos.proxy.stats.faulted_open} faulted connection(s) open"
    )
    assert _eventually(lambda: chaos.stack.engine_metric("vllm:num_requests_running") == 0), (
        "vLLM is still generating for a request the gateway gave up on"
    )
    # The scrape itself is the one request in flight.
    assert _eventually(lambda: metric(gateway, "portico_requests_in_flight") == 1)
    assert _eventually(lambda: metric(gateway, "portico_engine_in_flight") == 0)
    # Every reservation the faulted requests made was settled to what they used;
    # one left unsettled would still hold at least its max_tokens.
    new = {k: v for k, v in chaos.token_entries(client).items() if k not in before}
    assert new, "the faulted requests were not admitted through the tpm window"
    assert all(cost < STREAM_MAX_TOKENS for cost in new.values()), sorted(new.values())


def _recovers(chaos: Chaos) -> float:
    """Seconds until a normal request succeeds again, through the same gateway."""
    started = time.monotonic()
    body = {"model": MODEL, "prompt": f"Say hi. {uuid.uuid4().hex}", "max_tokens": 4}
    deadline = started + 30
    while True:
        answer = httpx.post(
            chaos.gateway + "/v1/completions", json=body, headers=chaos.auth, timeout=30
        )
        if answer.status_code == 200:
            return time.monotonic() - started
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.5)


def _stream_body(prompt: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": STREAM_MAX_TOKENS,
        "temperature": 0,  # deterministic, so the cache would store it
        "ignore_eos": True,
        "stream": True,
    }


def _not_cached(chaos: Chaos, body: dict[str, Any]) -> str:
    """The x-cache header of the same request sent again, fault disarmed (read the
    headers only, then leave)."""
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", chaos.gateway + "/v1/completions", json=body, headers=chaos.auth
        ) as answer,
    ):
        assert answer.status_code == 200
        return answer.headers["x-cache"]


# (action, bytes of the answer relayed before it): past the response head and a
# few chunks, so the client has started reading a real stream.
STREAM_FAULTS: list[tuple[Action, int]] = [("stall", 1500), ("half_close", 1500), ("reset", 1500)]


@pytest.mark.parametrize(
    ("action", "after_bytes"), STREAM_FAULTS, ids=[f[0] for f in STREAM_FAULTS]
)
def test_engine_connection_broken_mid_stream(
    chaos: Chaos, redis_client: redis.Redis, action: Action, after_bytes: int
) -> None:
    body = _stream_body(f"Tell a long story about the sea. {uuid.uuid4().hex}")
    before = chaos.token_entries(redis_client)
    broken_before = metric(chaos.gateway, "portico_streams_broken_total")
    chaos.proxy.arm(action, after_bytes=after_bytes)
    client = openai.OpenAI(base_url=chaos.gateway + "/v1", api_key=chaos.key, max_retries=0)
    extra = {k: body[k] for k in ("ignore_eos",)}
    received: list[str] = []

    def read_stream() -> None:
        for chunk in client.completions.create(
            model=MODEL,
            prompt=body["prompt"],
            max_tokens=STREAM_MAX_TOKENS,
            temperature=0,
            stream=True,
            extra_body=extra,
        ):
            received.append(chunk.choices[0].text)

    started = time.monotonic()
    with pytest.raises(openai.APIError) as excinfo:
        read_stream()
    elapsed = time.monotonic() - started
    chaos.proxy.disarm()
    # The client read part of a real answer, then an error, never a silent end.
    assert received, "the fault struck before any chunk: raise after_bytes"
    assert "broke" in str(excinfo.value) or "stalled" in str(excinfo.value), excinfo.value
    if action == "stall":
        assert STREAM_IDLE_S <= elapsed < STREAM_IDLE_S + 10, elapsed
    else:
        assert elapsed < STREAM_IDLE_S + 10, elapsed
    assert chaos.proxy.stats.faulted >= 1
    assert metric(chaos.gateway, "portico_streams_broken_total") == broken_before + 1
    _assert_nothing_leaked(chaos, redis_client, before)
    assert _not_cached(chaos, body) == "miss"
    print(f"{action}: {len(received)} chunks, error after {elapsed:.2f} s, "
          f"recovered in {_recovers(chaos):.2f} s")  # fmt: skip


# Before the first byte of the answer: the gateway has sent nothing to the client yet.
# A broken connection is a 503 (the OpenAI SDK retries it; nothing reached the
# client yet), a stall a 504; both in the OpenAI error shape.
HEAD_FAULTS: list[tuple[Action, int, int, str]] = [
    ("stall", 0, 504, "engine_timeout"),
    ("half_close", 0, 503, "engine_unavailable"),
    ("reset", 0, 503, "engine_unavailable"),
    ("half_close", 60, 503, "engine_unavailable"),  # half the response head
    # The head (~130 bytes) and part of the body arrived, then the connection went.
    ("half_close", 200, 503, "engine_unavailable"),
    ("reset", 200, 503, "engine_unavailable"),
]


@pytest.mark.parametrize(
    ("action", "after_bytes", "status", "code"),
    HEAD_FAULTS,
    ids=[f"{f[0]}-after-{f[1]}-bytes" for f in HEAD_FAULTS],
)
def test_engine_connection_broken_before_the_answer(
    chaos: Chaos,
    redis_client: redis.Redis,
    action: Action,
    after_bytes: int,
    status: int,
    code: str,
) -> None:
    body = {
        "model": MODEL,
        # A reservation as large as the streams' (max_tokens), so a leaked one would
        # show, but an answer cut at its first space or newline: a token or two, so
        # the unfaulted requests answer well within first_byte_s on a busy CPU too.
        "prompt": f"[{uuid.uuid4().hex}]\nQ: What colour is the sky on a clear day? "
        "Answer in one word.\nA:",
        "max_tokens": STREAM_MAX_TOKENS,
        "stop": ["\n", " "],
        "temperature": 0,
    }
    before = chaos.token_entries(redis_client)
    chaos.proxy.arm(action, after_bytes=after_bytes)
    started = time.monotonic()
    answer = httpx.post(
        chaos.gateway + "/v1/completions", json=body, headers=chaos.auth, timeout=60
    )
    elapsed = time.monotonic() - started
    chaos.proxy.disarm()
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, error
    assert elapsed < FIRST_BYTE_S + 10, elapsed
    if action == "stall":
        assert elapsed >= FIRST_BYTE_S, elapsed
    _assert_nothing_leaked(chaos, redis_client, before)
    again = httpx.post(chaos.gateway + "/v1/completions", json=body, headers=chaos.auth, timeout=60)
    assert again.status_code == 200, again.text
    assert again.headers["x-cache"] == "miss"  # the failure was not cached
    print(f"{action} after {after_bytes} B: {status} in {elapsed:.2f} s, "
          f"recovered in {_recovers(chaos):.2f} s")  # fmt: skip


async def _open_and_abandon(chaos: Chaos, count: int) -> int:
    """``count`` streams at once; each reads its first chunk, then all hang up together."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        answers = [
            await session.post(
                chaos.gateway + "/v1/completions",
                json=_stream_body(f"Story number {i}. {uuid.uuid4().hex}"),
                headers=chaos.auth,
            )
            for i in range(count)
        ]
        # Every stream is being generated: read a first chunk from each.
        firsts = await asyncio.gather(*(a.content.readany() for a in answers))
        started = sum(
            1 for a, first in zip(answers, firsts, strict=True) if a.status == 200 and first
        )
        for answer in answers:
            answer.close()  # drop the connection mid-stream
        return started


def test_many_clients_abort_their_streams_at_once(chaos: Chaos, redis_client: redis.Redis) -> None:
    """Two bursts of streams abandoned together; after each, the gateway process's
    descriptors and tasks are back where they were before the first. Pooled
    connections (to Redis, up to the pool's cap of 200; idle keep-alive ones to the
    engine) are kept for reuse by design, so they are counted apart and bounded."""
    count = 24
    gateway = _process_serving(chaos.gateway)
    redis_port = urlsplit(REDIS_URL).port

    def footprint() -> tuple[int, float]:
        pooled = sum(
            1
            for c in gateway.net_connections("tcp")
            if c.raddr and c.raddr.port in (redis_port, chaos.proxy.port)
        )
        return gateway.num_fds() - pooled, metric(chaos.gateway, "portico_asyncio_tasks")

    baseline = footprint()
    after: list[tuple[int, float]] = []
    for _ in range(2):
        before = chaos.token_entries(redis_client)
        assert asyncio.run(_open_and_abandon(chaos, count)) == count
        _assert_nothing_leaked(chaos, redis_client, before)
        # The streams' engine connections are closed, not parked: what stays open is
        # the pool's few idle keep-alive connections.
        assert _eventually(lambda: chaos.proxy.stats.open <= 4), chaos.proxy.stats
        after.append(footprint())
    assert _eventually(
        lambda: all(now <= then for now, then in zip(footprint(), baseline, strict=True))
    ), (baseline, after, footprint())
    print(f"2 x {count} streams aborted; (descriptors besides pools, tasks) before: "
          f"{baseline}, after each: {after}; recovered in {_recovers(chaos):.2f} s")  # fmt: skip


def test_the_fault_proxy_is_transparent_when_disarmed(chaos: Chaos) -> None:
    """The control: through the same proxy, unfaulted, a stream runs to [DONE]."""
    body = {**_stream_body(f"Count to five. {uuid.uuid4().hex}"), "max_tokens": 16}
    with (
        httpx.Client(timeout=60) as client,
        client.stream(
            "POST", chaos.gateway + "/v1/completions", json=body, headers=chaos.auth
        ) as answer,
    ):
        lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
