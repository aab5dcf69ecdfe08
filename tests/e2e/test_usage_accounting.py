"""Token accounting against the real engine: a gateway with Redis and an admin
token in front of the session's vLLM, charging what vLLM reports."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import ADMIN, MODEL

pytestmark = pytest.mark.e2e

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _new_key(redis_gateway: str, **spec: Any) -> tuple[str, str]:
    created = httpx.post(
        f"{redis_gateway}/admin/keys", json={"name": "e2e", **spec}, headers=ADMIN_AUTH
    ).json()
    return created["key"], created["id"]


def _usage(redis_gateway: str, key_id: str) -> int:
    shown = httpx.get(f"{redis_gateway}/admin/keys/{key_id}", headers=ADMIN_AUTH).json()
    return int(shown["usage_tokens"])


FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_non_stream_usage_is_charged_exactly(redis_gateway: str) -> None:
    key, key_id = _new_key(redis_gateway, tpm=100_000)
    client = openai.OpenAI(base_url=f"{redis_gateway}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL, messages=FRANCE, temperature=0, max_tokens=30
    )
    assert reply.usage is not None
    assert _usage(redis_gateway, key_id) == reply.usage.total_tokens
    client.close()


def test_stream_is_charged_the_engines_usage_even_when_not_asked(redis_gateway: str) -> None:
    key, key_id = _new_key(redis_gateway, tpm=100_000)
    client = openai.OpenAI(base_url=f"{redis_gateway}/v1", api_key=key, max_retries=0)
    asked = list(
        client.chat.completions.create(
            model=MODEL, messages=FRANCE, temperature=0, max_tokens=30, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    usage = asked[-1].usage
    assert usage is not None
    assert _usage(redis_gateway, key_id) == usage.total_tokens
    # The same greedy request without asking for usage (and past the cache, which
    # would answer it without the engine): no usage chunk reaches the client, and
    # the key is charged the same real count again.
    plain = list(
        client.chat.completions.create(
            model=MODEL,
            messages=FRANCE,
            temperature=0,
            max_tokens=30,
            stream=True,
            extra_headers={"X-Portico-Cache": "off"},
        )
    )
    assert all(chunk.usage is None for chunk in plain)
    assert _usage(redis_gateway, key_id) == 2 * usage.total_tokens
    client.close()


def test_aborted_stream_is_charged_what_it_received(redis_gateway: str) -> None:
    key, key_id = _new_key(redis_gateway, tpm=100_000)
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
            "POST", f"{redis_gateway}/v1/completions", json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):  # fmt: skip
        for line in response.iter_lines():
            if line.startswith("data: {"):
                received += 1
            if received == 5:
                break
    charged = _usage(redis_gateway, key_id)
    assert charged >= 5  # at least the tokens the client received
    assert charged < 500  # not the whole reservation: the engine stopped
