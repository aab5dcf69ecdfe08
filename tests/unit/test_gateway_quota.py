"""What a request reserves in its tpm window before it is forwarded."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.protocol import ChatCompletionRequest, CompletionRequest
from gateway.quota import batch_size, completion_allowance

DEFAULT = 512


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
