"""PII redaction against the real vLLM engine: the prompt vLLM renders (its own
``return_prompt_text``) holds every text part type, and through a redacting gateway
it holds the token instead of the address."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LOG_DIR, MODEL, Stack
from tests.gateway.processes import gateway_env, gateways

pytestmark = pytest.mark.e2e

PII = "jane@example.com"
KEY = "pk-e2e-redaction-0123456789abcdef"
# One part of each text type vLLM 0.32 renders, each with its own marker word.
PARTS: dict[str, dict[str, Any]] = {
    "text": {"type": "text", "text": f"alpha {PII}"},
    "input_text": {"type": "input_text", "text": f"bravo {PII}"},
    "output_text": {"type": "output_text", "text": f"charlie {PII}"},
    "refusal": {"type": "refusal", "refusal": f"delta {PII}"},
    "thinking": {"type": "thinking", "thinking": f"echo {PII}", "closed": True},
}
MARKERS = ("alpha", "bravo", "charlie", "delta", "echo")


@pytest.fixture(scope="module")
def redacting(stack: Stack) -> Iterator[str]:
    env = gateway_env(
        PORTICO_ENGINE_URL=stack.engine_url,
        PORTICO_API_KEYS=KEY,
        PORTICO_REDACTION__MODE="redact",
    )
    with gateways(1, env, LOG_DIR) as urls:
        yield urls[0]


def _rendered(base_url: str, headers: dict[str, str]) -> str:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": list(PARTS.values())}],
        "max_tokens": 1,
        "temperature": 0,
        "return_prompt_text": True,
    }
    response = httpx.post(
        f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=120
    )
    assert response.status_code == 200, response.text
    prompt: str = response.json()["prompt_text"]
    return prompt


def test_vllm_renders_every_text_part_type_and_the_gateway_redacts_each(
    stack: Stack, redacting: str
) -> None:
    direct = _rendered(stack.engine_url, {})
    for marker in MARKERS:  # vLLM itself puts each part's text into the prompt
        assert f"{marker} {PII}" in direct, marker
    redacted = _rendered(redacting, {"Authorization": f"Bearer {KEY}"})
    assert PII not in redacted
    for marker in MARKERS:
        assert f"{marker} [EMAIL]" in redacted, marker
