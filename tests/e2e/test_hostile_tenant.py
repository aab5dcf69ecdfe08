"""A tenant trying to spend more than it is charged, or to hurt other tenants, against
the real vLLM engine (issue #14). Gateways with Redis and tight time limits in front
of the session's engine; the same behaviours on the fake engine are in
tests/gateway/test_tenant_isolation.py."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ADMIN, LOG_DIR, MODEL, Stack
from tests.gateway.processes import gateway_env, gateways

pytestmark = pytest.mark.e2e

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
ESSAY = [{"role": "user", "content": "Write a long essay about the history of bridges."}]


def _gateway(stack: Stack, **settings: str) -> Iterator[str]:
    env = gateway_env(
        PORTICO_ENGINE_URL=stack.engine_url,
        PORTICO_REDIS_URL="redis://127.0.0.1:6379/0",
        PORTICO_ADMIN_TOKEN=ADMIN,
        PORTICO_REDIS__PREFIX=f"e2e-hostile-{uuid.uuid4().hex[:8]}",
        PORTICO_REDIS__TIMEOUT_S="0.25",
        **settings,
    )
    with gateways(1, env, LOG_DIR) as urls:
        yield urls[0]


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Iterator[str]:
    """First byte within 3 s, but a non-stream answer may take two minutes."""
    yield from _gateway(stack, PORTICO_UPSTREAM__FIRST_BYTE_S="3")


def _key(gateway: str, **spec: Any) -> tuple[str, str]:
    created = httpx.post(
        f"{gateway}/admin/keys", json={"name": "hostile", **spec}, headers=ADMIN_AUTH
    )
    assert created.status_code == 201, created.text
    return created.json()["key"], created.json()["id"]


def _usage(gateway: str, key_id: str) -> int:
    shown = httpx.get(f"{gateway}/admin/keys/{key_id}", headers=ADMIN_AUTH).json()
    return int(shown["usage_tokens"])


def _chat(gateway: str, key: str, timeout_s: float = 120, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway}/v1/chat/completions",
        json={"model": MODEL, "messages": ESSAY, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=timeout_s,
    )


def test_stream_interval_is_refused_before_the_engine(gateway: str, stack: Stack) -> None:
    key, _ = _key(gateway)
    before = stack.engine_generation_requests()
    answer = _chat(gateway, key, max_tokens=4000, stream=True, stream_interval=1000)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "stream_interval"
    assert stack.engine_generation_requests() == before


def test_an_aborted_stream_is_charged_at_least_the_tokens_it_received(
    gateway: str, stack: Stack
) -> None:
    key, key_id = _key(gateway, tpm=1_000_000)
    prompt = _chat(gateway, key, max_tokens=1).json()["usage"]["prompt_tokens"]
    charged_for_prompt = _usage(gateway, key_id)
    body = {"model": MODEL, "messages": ESSAY, "max_tokens": 300, "ignore_eos": True}
    body |= {"stream": True, "logprobs": True}  # one logprob entry per token received
    received, events = 0, []
    with httpx.stream(
        "POST", f"{gateway}/v1/chat/completions", json=body, timeout=60,
        headers={"Authorization": f"Bearer {key}"},
    ) as answer:  # fmt: skip
        for line in answer.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line.removeprefix("data: "))
            events.append(event)
            for choice in event["choices"]:
                received += len((choice.get("logprobs") or {}).get("content") or [])
            if received >= 40:
                break  # the client leaves mid-answer
    assert all(event.get("usage") is None for event in events)  # not asked, not sent
    deadline = time.monotonic() + 10
    while _usage(gateway, key_id) - charged_for_prompt < prompt + received:
        assert time.monotonic() < deadline, (_usage(gateway, key_id), prompt, received)
        time.sleep(0.1)
    charged = _usage(gateway, key_id) - charged_for_prompt
    assert charged <= prompt + 300  # never more than the engine could have generated


def test_a_long_non_stream_answer_outlasts_the_first_byte_limit(gateway: str) -> None:
    # vLLM sends these headers only when generation ends: ~120 tokens take longer
    # than the 3 s first-byte limit on this CPU, and must still succeed.
    key, _ = _key(gateway)
    started = time.monotonic()
    answer = _chat(gateway, key, max_tokens=120, ignore_eos=True)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 120
    assert time.monotonic() - started > 3


@pytest.mark.parametrize("absent", [{}, {"max_tokens": None}])
def test_leaving_out_max_tokens_cannot_pass_the_keys_cap(
    gateway: str, absent: dict[str, Any]
) -> None:
    key, _ = _key(gateway, max_tokens=16)
    answer = _chat(gateway, key, timeout_s=60, ignore_eos=True, **absent)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 16


def test_relayed_engine_errors_are_openai_shaped(gateway: str) -> None:
    key, _ = _key(gateway)
    answer = _chat(gateway, key, max_tokens=5, top_k=-5)  # vLLM refuses it, not the gateway
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] is None or isinstance(error["code"], str)
    assert not str(error["code"]).isdigit()


def test_answers_a_tenant_makes_time_out_leave_the_engine_in_rotation(stack: Stack) -> None:
    # A 2 s generation limit: each 300-token answer outlasts it. Three such 504s
    # used to open the breaker, and every other tenant got 503.
    for url in _gateway(stack, PORTICO_UPSTREAM__GENERATION_S="2"):
        hostile, hostile_id = _key(url, tpm=1_000_000)
        other, _ = _key(url)
        for _ in range(3):
            answer = _chat(url, hostile, max_tokens=300, ignore_eos=True)
            assert answer.status_code == 504, answer.text
        # Charged their prompt estimates, as documented: not 0 (as a 504 was), and not
        # their reservations (each the prompt estimate plus 300).
        assert 0 < _usage(url, hostile_id) < 3 * 300
        assert httpx.get(f"{url}/readyz").status_code == 200
        answer = _chat(url, other, max_tokens=5)
        assert answer.status_code == 200, answer.text
        # The gateway dropped each timed-out connection, so vLLM aborted the work.
        deadline = time.monotonic() + 10
        while stack.engine_metric("vllm:num_requests_running") > 0:
            assert time.monotonic() < deadline, "vLLM still runs the timed-out requests"
            time.sleep(0.2)
