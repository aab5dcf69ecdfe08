"""What a request reserves in its tpm window before it is forwarded, and how it is
settled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.auth import Principal
from gateway.errors import RateLimited, RedisUnavailable
from gateway.metrics import Metrics
from gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    batch_size,
    completion_allowance,
)
from gateway.quota import QuotaService
from gateway.ratelimit import Decision, MemoryLimiter, Window
from gateway.redis_policy import RedisPolicy
from gateway.settings import RateLimitSettings

DEFAULT = 512
_OPEN = RedisPolicy("open", Metrics())  # the fail-open policy these tests run under


def _completion(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", "prompt": "hi", **fields})


@pytest.mark.parametrize(
    ("fields", "allowance"),
    [
        ({"max_tokens": 10}, 10),
        ({}, DEFAULT),
        ({"max_tokens": 10, "n": 3}, 30),
        ({"max_tokens": 10, "n": 2, "best_of": 4}, 40),
        # A batch is one generation per prompt: each may use max_tokens.
        ({"max_tokens": 10, "prompt": ["a", "b", "c"]}, 30),
        ({"max_tokens": 10, "prompt": [[1, 2], [3], [4]], "n": 2}, 60),
        ({"max_tokens": 10, "prompt": [1, 2, 3]}, 10),  # one prompt as token ids
        ({"prompt": ["a", "b"]}, 2 * DEFAULT),
    ],
)
def test_completion_allowance_counts_choices_and_prompts(
    fields: dict[str, Any], allowance: int
) -> None:
    assert completion_allowance(_completion(**fields), DEFAULT) == allowance


def test_chat_allowance_prefers_max_completion_tokens() -> None:
    chat = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5,
            "max_completion_tokens": 7,
            "n": 2,
        }
    )
    assert completion_allowance(chat, DEFAULT) == 14


@pytest.mark.parametrize(
    ("prompt", "size"), [("a", 1), ([1, 2], 1), (["a", "b"], 2), ([[1], [2], [3]], 3), ([], 1)]
)
def test_batch_size(prompt: Any, size: int) -> None:
    assert batch_size(prompt) == size


class LostAnswerLimiter(MemoryLimiter):
    """Redis ran the call but its answer was lost (a stalled connection, a timeout):
    the reservation is recorded, and the caller sees RedisUnavailable."""

    def __init__(self) -> None:
        super().__init__(60)
        self.lose_answers = True

    async def acquire(self, windows: list[Window], reservation: str) -> Decision:
        decision = await super().acquire(windows, reservation)
        if self.lose_answers:
            raise RedisUnavailable("TimeoutError")
        return decision

    def costs(self, window: Window) -> list[int]:
        return [cost for _, cost in self._logs.get((window.name, window.subject), {}).values()]


def test_an_admission_that_failed_open_still_settles_its_reservation() -> None:
    limiter = LostAnswerLimiter()
    quota = QuotaService(limiter, RateLimitSettings(), 4096, _OPEN, Metrics())
    principal = Principal(id="key_a", kind="key", rpm=100, tpm=10_000)
    request = _completion(max_tokens=1000)

    async def scenario() -> None:
        admission = await quota.admit(principal, request, 5)  # failed open: admitted
        tpm = Window("tpm", "key_a", 10_000, 0)
        assert limiter.costs(tpm)[0] >= 1000  # the lost call did reserve
        await admission.settle(12)
        assert limiter.costs(tpm) == [12]  # settled, not held for a window
        # The key's usage is left alone: whether its budget was charged is unknown.
        assert await limiter.usage("key_a") == 0

    asyncio.run(scenario())


def test_a_request_larger_than_the_tpm_limit_is_told_not_to_retry() -> None:
    # Waiting cannot help: without x-should-retry: false the OpenAI SDK would wait
    # out Retry-After twice and then fail anyway.
    quota = QuotaService(MemoryLimiter(60), RateLimitSettings(), 4096, _OPEN, Metrics())
    principal = Principal(id="key_b", kind="key", tpm=1000)
    with pytest.raises(RateLimited) as info:
        asyncio.run(quota.admit(principal, _completion(max_tokens=2000), 5))
    assert info.value.headers.get("x-should-retry") == "false"
    assert "retry-after" not in info.value.headers


def test_a_cache_hit_reads_the_tpm_window_without_spending_or_being_refused() -> None:
    limiter = MemoryLimiter(60)
    quota = QuotaService(limiter, RateLimitSettings(), 4096, _OPEN, Metrics())
    principal = Principal(id="key_c", kind="key", rpm=10, tpm=100)

    async def scenario() -> dict[str, str]:
        full = await quota.admit(principal, _completion(max_tokens=90), 10)  # fills tpm
        await full.settle(150)  # the engine reported more than was reserved
        hit = await quota.admit(principal, _completion(max_tokens=90), None)
        return hit.headers

    headers = asyncio.run(scenario())
    assert headers["x-ratelimit-limit-tokens"] == "100"
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert headers["x-ratelimit-remaining-requests"] == "8"


def test_batch_lines_use_their_own_window_never_the_keys_rpm_and_tpm() -> None:
    """A key at its rpm and tpm still runs batch lines (in the batch window); batch
    lines never use up the interactive limits; the batch window refuses past its own."""

    async def scenario() -> None:
        limiter = MemoryLimiter(60.0)
        quota = QuotaService(limiter, RateLimitSettings(), DEFAULT, _OPEN, Metrics(), 100)
        key = Principal(id="k", kind="static", rpm=1, tpm=60)
        request = _completion(max_tokens=10)
        await quota.admit(key, request, 20)  # the key's one request a minute, 30 tokens
        with pytest.raises(RateLimited):
            await quota.admit(key, request, 20)
        for _ in range(3):  # 3 x 30 tokens of the batch window's 100
            await quota.admit(key, request, 20, batch=True)
        with pytest.raises(RateLimited):
            await quota.admit(key, request, 20, batch=True)

    asyncio.run(scenario())
