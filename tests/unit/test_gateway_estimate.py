"""The prompt-token estimate the limiter reserves: every field of the body counts,
dense text is not undercounted, and it never falls below what the engine counted
for the corpus in tests/prompt_corpus.py (recorded there, re-checked by the e2e test)."""

from __future__ import annotations

import json
import timeit
from typing import Any

import pytest

from gateway.estimate import estimate_prompt_tokens, weigh
from gateway.protocol import ChatCompletionRequest, CompletionRequest, parse
from tests.prompt_corpus import (
    CHAT,
    FINDING_PROMPT_TOKENS,
    PROMPT_TOKENS,
    corpus,
    encode,
    finding_body,
    tools,
)

MODEL = "fake-model"
ASK = [{"role": "user", "content": "Find the records."}]


def _estimate(route: str, body: bytes) -> int:
    model = ChatCompletionRequest if route == CHAT else CompletionRequest
    return estimate_prompt_tokens(parse(model, body), body)


def _chat(**fields: Any) -> int:
    body = encode({"model": MODEL, "max_tokens": 1, "messages": ASK, **fields})
    return _estimate(CHAT, body)


def _completion(prompt: Any, **fields: Any) -> int:
    body = encode({"model": MODEL, "max_tokens": 1, "prompt": prompt, **fields})
    return estimate_prompt_tokens(parse(CompletionRequest, body), body)


@pytest.mark.parametrize("name", sorted(PROMPT_TOKENS))
def test_estimate_is_never_below_the_engines_count(name: str) -> None:
    route, body = corpus(MODEL)[name]
    assert _estimate(route, body) >= PROMPT_TOKENS[name]


def test_estimate_of_the_findings_request_covers_the_engines_count() -> None:
    """The review's 59 KB tools-heavy request was estimated at 18 tokens."""
    assert _estimate(CHAT, encode(finding_body(MODEL))) >= FINDING_PROMPT_TOKENS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", tools(3)),
        ("documents", [{"title": "Notes", "text": "The depot opens at six. " * 40}]),
        ("chat_template_kwargs", {"persona": "a terse archivist " * 40}),
        ("a_field_no_template_reads_today", "something a template may render " * 40),
    ],
)
def test_any_field_of_the_body_adds_at_least_its_weight(field: str, value: Any) -> None:
    added = weigh(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    assert _chat(**{field: value}) >= _chat() + added


def test_assistant_tool_calls_and_tool_results_count() -> None:
    arguments = json.dumps({"query": "invoices", "ids": list(range(200))})
    call = {"id": "c1", "type": "function", "function": {"name": "search", "arguments": arguments}}
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "no invoice found " * 50},
    ]
    assert _chat(messages=history) >= _chat() + weigh(arguments.encode()) + 50 * 3


def test_tools_add_the_templates_tool_instructions() -> None:
    tiny = [{"type": "function", "function": {"name": "f"}}]
    assert _chat(tools=tiny) >= _chat() + 100


def test_tools_of_a_developer_message_add_the_tool_instructions() -> None:
    tiny = [{"type": "function", "function": {"name": "f"}}]
    developer = {"role": "developer", "content": "Be brief.", "tools": tiny}
    plain = {"role": "developer", "content": "Be brief."}
    assert _chat(messages=[developer, *ASK]) >= _chat(messages=[plain, *ASK]) + 100


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("1234567890" * 10, 100),  # one token per digit
        ("3.49, 2025-03-31T23:59:59Z " * 4, 4 * 27),  # every byte a token
        ("符号測試測驗" * 10, 60 * 2),  # rare CJK: two to three tokens per character
        ("🎉🚀✨🧪" * 10, 40 * 2),  # emoji: two to four tokens each
        ("<<>>[[]]((||))" * 10, 140 * 3 // 4),
        ("QWERTYZXCV" * 10, 100 * 3 // 4),
    ],
)
def test_dense_text_weighs_at_least_its_token_count(text: str, tokens: int) -> None:
    assert weigh(text.encode()) >= tokens


def test_no_byte_weighs_nothing() -> None:
    for byte in range(256):
        assert weigh(bytes([byte]) * 7) >= 1, byte


@pytest.mark.parametrize(
    ("prompt", "tokens"),
    [([1, 2, 3], 3), ([[1, 2], [3], [4, 5, 6]], 6), ([99999] * 1000, 1000)],
)
def test_token_id_prompts_are_counted_exactly(prompt: Any, tokens: int) -> None:
    assert _completion(prompt) == tokens


def test_a_suffix_beside_token_ids_is_weighed_as_text() -> None:
    assert _completion([1, 2, 3], suffix="0123456789") >= 3 + 10


def test_every_prompt_of_a_batch_counts() -> None:
    one = _completion("The kettle clicked off. " * 20)
    two = _completion(["The kettle clicked off. " * 20, "1234567890" * 10])
    assert two >= one + 100


def test_a_completion_is_charged_its_prompt_not_the_bodys_other_fields() -> None:
    """A completion has no template: only its prompt (and suffix) becomes tokens, so a
    one-word prompt stays a few tokens (small tpm values keep working)."""
    assert _completion("fine", temperature=0, top_k=40, stop=["\n"]) <= 4


def test_weighing_a_60_kb_body_takes_well_under_a_millisecond() -> None:
    """Two C-speed passes; a per-byte Python loop would take several milliseconds."""
    body = encode(finding_body(MODEL))
    assert len(body) > 55_000
    seconds = min(timeit.repeat(lambda: weigh(body), number=20, repeat=5)) / 20
    assert seconds < 0.001
