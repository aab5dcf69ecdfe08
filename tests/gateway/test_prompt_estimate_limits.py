"""Finding 4 of the hostile-tenant review (issue #14): the limiter's prompt estimate read
only ``messages[].content``, so tools-heavy requests with ``max_tokens: 1`` reserved a
few tokens each and a burst of them went far past ``tpm``. On the real app with the real
Redis, in front of the fake engine given a chat route that answers like vLLM did for the
same body (its real prompt_tokens, recorded in tests/prompt_corpus.py and re-checked
against the real engine by tests/e2e/test_prompt_estimate.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.servers import serving
from tests.gateway.test_keys_and_limits import _create, _gateway, prefix
from tests.prompt_corpus import CHAT, PROMPT_TOKENS, corpus

__all__ = ["prefix"]  # the fixture, used by name

TOOLS_HEAVY = "tools-heavy (12 long tools)"
REAL_PROMPT = PROMPT_TOKENS[TOOLS_HEAVY]  # 3471 tokens for an 11 KB body
TPM = 20_000
BURST = 12


async def _chat(_: Request) -> Response:
    # Held long enough that the whole burst is admitted (or not) before any answer
    # settles its reservation: admission alone decides.
    await asyncio.sleep(1.5)
    usage = {"prompt_tokens": REAL_PROMPT, "completion_tokens": 1}
    choice = {"index": 0, "message": {"role": "assistant", "content": "ok"}}
    answer = {"id": "chatcmpl-fake", "object": "chat.completion", "model": MODEL}
    return JSONResponse(
        {**answer, "choices": [choice], "usage": {**usage, "total_tokens": REAL_PROMPT + 1}}
    )


def _burst(client: httpx.Client, key: str, body: bytes) -> list[int]:
    """BURST copies of ``body`` sent at once; their statuses."""
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}

    def send(_: int) -> int:
        return client.post("/v1/chat/completions", content=body, headers=headers).status_code

    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(send, range(BURST)))


@pytest.fixture
def engine_url() -> Iterator[str]:
    engine = FakeEngine()
    engine.app.router.routes.append(Route("/v1/chat/completions", _chat, methods=["POST"]))
    with serving(engine.app) as url:
        yield url


def test_a_burst_of_tools_heavy_requests_is_admitted_only_as_far_as_tpm_allows(
    engine_url: str, prefix: str
) -> None:
    route, body = corpus(MODEL)[TOOLS_HEAVY]
    assert route == CHAT
    for client in _gateway(engine_url, prefix):
        client.timeout = httpx.Timeout(30)
        key, _ = _create(client, tpm=TPM)
        statuses = _burst(client, key, body)
        admitted = statuses.count(200)
        assert statuses.count(429) == BURST - admitted, statuses
        # Each answer really costs REAL_PROMPT + 1 tokens: no more than this many fit.
        fit = TPM // (REAL_PROMPT + 1)
        assert 1 <= admitted <= fit, f"{admitted} admitted, {fit} fit in tpm={TPM}"
