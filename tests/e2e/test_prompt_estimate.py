"""The limiter's prompt estimate against the real engine's count (finding 4, issue #14).

Each body of tests/prompt_corpus.py goes to vLLM itself (the bundled model with the
chat template and tool parser `make run` gives it) with ``max_tokens: 1``; its
``usage.prompt_tokens`` is what a reservation is settled to. The estimate must never be
below it (docs/limits.md states the margin: none), and the counts the unit tests hold
the estimate to must still be the engine's. The ratios are written to
``build/test-logs/prompt_estimate.txt``."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway.estimate import estimate_prompt_tokens
from gateway.protocol import ChatCompletionRequest, CompletionRequest, parse
from tests.e2e.conftest import LOG_DIR, MODEL, Stack
from tests.prompt_corpus import (
    CHAT,
    FINDING_PROMPT_TOKENS,
    PROMPT_TOKENS,
    corpus,
    encode,
    finding_body,
)

pytestmark = pytest.mark.e2e

BODIES = corpus(MODEL)
JSON = {"content-type": "application/json"}


def _estimate(route: str, body: bytes) -> int:
    model = ChatCompletionRequest if route == CHAT else CompletionRequest
    return estimate_prompt_tokens(parse(model, body), body)


@pytest.fixture(scope="module")
def ratios() -> Iterator[dict[str, tuple[int, int]]]:
    """name -> (engine's count, estimate), written out when the module ends."""
    seen: dict[str, tuple[int, int]] = {}
    yield seen
    lines = [f"{'body':45} {'engine':>7} {'estimate':>8} {'ratio':>6}"]
    for name, (real, estimate) in seen.items():
        lines.append(f"{name:45} {real:7d} {estimate:8d} {estimate / real:6.2f}")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    (LOG_DIR / "prompt_estimate.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", list(BODIES))
def test_estimate_is_never_below_the_engines_prompt_tokens(
    stack: Stack, ratios: dict[str, tuple[int, int]], name: str
) -> None:
    route, body = BODIES[name]
    answer = httpx.post(stack.engine_url + route, content=body, headers=JSON, timeout=300)
    assert answer.status_code == 200, answer.text
    real = answer.json()["usage"]["prompt_tokens"]
    estimate = _estimate(route, body)
    ratios[name] = (real, estimate)
    assert real == PROMPT_TOKENS[name], "the engine's count changed: update prompt_corpus"
    assert estimate >= real
    # Not uselessly high either: within twice the count plus fixed template costs.
    assert estimate <= 2 * real + 600


def test_estimate_of_the_findings_request_is_not_below_the_engines_count(
    stack: Stack, ratios: dict[str, tuple[int, int]]
) -> None:
    """The review's 59 KB tools-heavy request: beyond the test engine's context, so the
    engine counts it with /tokenize (the same rendering and tokenizer)."""
    body = finding_body(MODEL)
    fields = {key: body[key] for key in ("model", "messages", "tools")}
    answer = httpx.post(f"{stack.engine_url}/tokenize", json=fields, timeout=300)
    assert answer.status_code == 200, answer.text
    real = answer.json()["count"]
    estimate = _estimate(CHAT, encode(body))
    ratios["finding 4: 66 long tools, 59 KB"] = (real, estimate)
    assert real == FINDING_PROMPT_TOKENS
    assert real <= estimate <= 2 * real + 600
