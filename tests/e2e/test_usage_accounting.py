"""Token accounting against the real engine: a gateway with Redis and an admin
token in front of the session's vLLM, charging what vLLM reports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import LOG_DIR, MODEL, Stack
from tests.gateway.processes import gateway_env, gateways

pytestmark = pytest.mark.e2e

ADMIN = "e2e-admin-token-0123456789abcdef"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def gateway_url(stack: Stack) -> Iterator[str]:
    env = gateway_env(
        PORTICO_ENGINE_URL=stack.engine_url,
        PORTICO_REDIS_URL="redis://127.0.0.1:6379/0",
        PORTICO_ADMIN_TOKEN=ADMIN,
        PORTICO_REDIS__PREFIX=f"e2e-{uuid.uuid4().hex[:8]}",
    )
    log_dir = Path(LOG_DIR)
    log_dir.mkdir(parents=True, exist_ok=True)
    with gateways(1, env, log_dir) as urls:
        yield urls[0]


def _new_key(gateway_url: str, **spec: Any) -> tuple[str, str]:
    created = httpx.post(
        f"{gateway_url}/admin/keys", json={"name": "e2e", **spec}, headers=ADMIN_AUTH
    ).json()
    return created["key"], created["id"]


def _usage(gateway_url: str, key_id: str) -> int:
    shown = httpx.get(f"{gateway_url}/admin/keys/{key_id}", headers=ADMIN_AUTH).json()
    return int(shown["usage_tokens"])


FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_non_stream_usage_is_charged_exactly(gateway_url: str) -> None:
    key, key_id = _new_key(gateway_url, tpm=100_000)
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL, messages=FRANCE, temperature=0, max_tokens=30
    )
    assert reply.usage is not None
    assert _usage(gateway_url, key_id) == reply.usage.total_tokens
    client.close()


def test_stream_is_charged_the_engines_usage_even_when_not_asked(gateway_url: str) -> None:
    key, key_id = _new_key(gateway_url, tpm=100_000)
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0)
    asked = list(
        client.chat.completions.create(
            model=MODEL, messages=FRANCE, temperature=0, max_tokens=30, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    usage = asked[-1].usage
    assert usage is not None
    assert _usage(gateway_url, key_id) == usage.total_tokens
    # The same greedy request without asking for usage: no usage chunk reaches the
    # client, and the key is charged the same real count again.
    plain = list(
        client.chat.completions.create(
            model=MODEL, messages=FRANCE, temperature=0, max_tokens=30, stream=True
        )
    )
    assert all(chunk.usage is None for chunk in plain)
    assert _usage(gateway_url, key_id) == 2 * usage.total_tokens
    client.close()


def test_aborted_stream_is_charged_what_it_received(gateway_url: str) -> None:
    key, key_id = _new_key(gateway_url, tpm=100_000)
    body = {
        "model": MODEL,
        "prompt": "Tell a long story.",
        "max_tokens": 500,
        "ignore_eos": True,
        "stream": True,
    }
    received = 0
    with (
        httpx.Client(timeout=60) as client,
        client.stream(
            "POST", f"{gateway_url}/v1/completions", json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):  # fmt: skip
        for line in response.iter_lines():
            if line.startswith("data: {"):
                received += 1
            if received == 5:
                break
    charged = _usage(gateway_url, key_id)
    assert charged >= 5  # at least the tokens the client received
    assert charged < 500  # not the whole reservation: the engine stopped
