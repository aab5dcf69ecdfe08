"""Request bodies whose prompt-token count the gateway's estimate must not undershoot:
every kind of text and every field the engine's chat template turns into prompt tokens.

Shared by the estimator's unit tests, the corpus test against the real engine
(tests/e2e/test_prompt_estimate.py, which records each body's real ``prompt_tokens``)
and the limiter test through the real app. Bodies are compact JSON with raw UTF-8, the
fewest bytes a client can send for the same prompt (the hardest case for an estimate
read from bytes). Every chat body fits the e2e engine's 4096-token context.
"""

from __future__ import annotations

import json
import random
import string
from importlib import resources
from typing import Any

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"

# vLLM 0.32's prompt_tokens for each body below on the bundled model (SmolLM2-135M-Instruct
# with Portico's chat template), recorded so that unit tests can hold the estimate to them;
# tests/e2e/test_prompt_estimate.py checks the engine still reports exactly these.
PROMPT_TOKENS = {
    "plain short chat": 37,
    "short conversation with a system prompt": 40,
    "long system prompt": 3065,
    "tools-heavy (12 long tools)": 3471,
    "tool calls and tool results in history": 2313,
    "multi-part content": 241,
    "chinese and japanese": 2778,
    "emoji": 2131,
    "rare cjk characters": 2448,
    "digit-heavy": 2029,
    "punctuation-heavy": 1525,
    "code": 826,
    "documents and chat_template_kwargs": 35,
    "random ascii letters": 1853,
    "base64 blob": 2065,
    "completion string prompt": 696,
    "completion list of prompts": 1183,
}
FINDING_PROMPT_TOKENS = 18327  # finding_body(), counted by the engine's /tokenize

# Hand-written, not copied from any corpus (Chinese commas are full-width on purpose).
CHINESE = (
    "我们今天早上去北京参观了故宫和长城，天气很好，人也不多。下午在胡同里喝茶，"  # noqa: RUF001
    "晚上吃了烤鸭。明天打算去颐和园散步，然后坐高铁回上海。"  # noqa: RUF001
)
JAPANESE = (
    "東京は大きな都市ですが、少し歩くと静かな神社や小さな公園があります。"
    "朝は駅がとても混むので、早めに家を出るようにしています。"
)
EMOJI = "🎉🚀✨ Launch day! 🙌🏽👩‍💻👨‍👩‍👧 🇫🇷🇯🇵 ❤️🔥 ok 👍 🧪🧬🔭 "
DIGITS = (
    "Invoice 2024-0931: 17 x 3.49 = 59.33; VAT 19% = 11.27; total 70.60 EUR. "
    "Ref 4485 9921 0037 1186, due 2025-03-31T23:59:59Z, +49 30 901820. "
)
PUNCTUATION = (
    '{"a":[1,{"b":"c"}],"d":null}; x->y; a!=b && c||d; /* ?? */ #[derive(Debug)] '
    "<<<>>> ((()))[[[]]] ~`@$%^&*_+=|\\:;'\",.?/ --- *** ___ ... !!! ### |a|b|c| "
)


def texts() -> list[str]:
    """Portico's own short English and code samples (modeltools/data/calibration.jsonl)."""
    raw = resources.files("modeltools.data").joinpath("calibration.jsonl").read_text("utf-8")
    return [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]


def _prose(count: int, start: int = 0) -> str:
    samples = texts()
    return "\n".join(samples[(start + i) % len(samples)] for i in range(count))


def _tool(index: int) -> dict[str, Any]:
    """A tool with a long description and a nested schema, as agents send them."""
    words = _prose(3, index * 7)
    properties: dict[str, Any] = {
        "query": {"type": "string", "description": _prose(1, index * 5 + 1)},
        "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 20},
        "mode": {"type": "string", "enum": ["fast", "exact", "fuzzy", "semantic"]},
        "filters": {
            "type": "object",
            "properties": {
                "created_after": {"type": "string", "format": "date-time"},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 16},
            },
        },
    }
    function = {
        "name": f"tool_{index}_search_records",
        "description": words,
        "parameters": {"type": "object", "properties": properties, "required": ["query"]},
    }
    return {"type": "function", "function": function}


def tools(count: int) -> list[dict[str, Any]]:
    return [_tool(i) for i in range(count)]


def _call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    function = {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}
    return {"id": call_id, "type": "function", "function": function}


def _chat(model: str, messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": messages, "max_tokens": 1, "temperature": 0, **fields}


def _user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def _random_text(alphabet: str, length: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(length))


def _history(model: str) -> dict[str, Any]:
    calls = [
        _call("call_1", "tool_0_search_records", {"query": "invoices 2024", "limit": 50}),
        _call("call_2", "tool_1_search_records", {"query": "東京 ホテル", "mode": "fuzzy"}),
    ]
    results = [
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": json.dumps(
                [
                    {"id": 1000 + i, "total": round(i * 13.37, 2), "due": f"2024-0{i % 9 + 1}-1{i}"}
                    for i in range(30)
                ]
            ),
        },
        {
            "role": "tool",
            "tool_call_id": "call_2",
            "content": [{"type": "text", "text": JAPANESE}, {"type": "text", "text": "3 hits"}],
        },
    ]
    messages = [
        {"role": "system", "content": "You help with bookkeeping and travel."},
        _user("Find my 2024 invoices and a hotel in Tokyo."),
        {"role": "assistant", "content": None, "tool_calls": calls},
        *results,
        {"role": "assistant", "content": "Found 30 invoices and 3 hotels."},
        _user("Which invoice is the largest?"),
    ]
    return _chat(model, messages, tools=tools(3), tool_choice="auto")


def chat_bodies(model: str) -> dict[str, dict[str, Any]]:
    """Chat requests, by name: plain, long, tools, history, parts, non-ASCII, dense text."""
    parts = [{"type": "text", "text": _prose(4, 40)}, {"type": "text", "text": DIGITS}]
    return {
        "plain short chat": _chat(model, [_user("What is the capital of France?")]),
        "short conversation with a system prompt": _chat(
            model,
            [
                {"role": "system", "content": "Be brief."},
                _user("Hi"),
                {"role": "assistant", "content": "Hello! How can I help?"},
                _user("Name a colour."),
            ],
        ),
        "long system prompt": _chat(
            model, [{"role": "system", "content": _prose(120)}, _user("Summarise.")]
        ),
        "tools-heavy (12 long tools)": _chat(
            model, [_user("Find the records.")], tools=tools(12), tool_choice="auto"
        ),
        "tool calls and tool results in history": _history(model),
        "multi-part content": _chat(model, [_user(parts), _user([{"type": "text", "text": "?"}])]),
        "chinese and japanese": _chat(model, [_user((CHINESE + JAPANESE) * 12)]),
        "emoji": _chat(model, [_user(EMOJI * 30)]),
        "rare cjk characters": _chat(
            model, [_user(_random_text("".join(map(chr, range(0x4E00, 0x9FA5))), 900, 1))]
        ),
        "digit-heavy": _chat(model, [_user(DIGITS * 18)]),
        "punctuation-heavy": _chat(model, [_user(PUNCTUATION * 18)]),
        "code": _chat(
            model,
            [_user("Review:\n" + "\n\n".join(t for t in texts() if "\n    " in t or "\n  " in t))],
        ),
        "documents and chat_template_kwargs": _chat(
            model,
            [_user("Answer from the documents.")],
            documents=[{"title": "Notes", "text": _prose(10, 60)}],
            chat_template_kwargs={"add_notes": True},
        ),
        "random ascii letters": _chat(model, [_user(_random_text(string.ascii_letters, 2500, 2))]),
        "base64 blob": _chat(
            model, [_user(_random_text(string.ascii_letters + string.digits + "+/", 2500, 3))]
        ),
    }


def completion_bodies(model: str) -> dict[str, dict[str, Any]]:
    """Completions requests: a string prompt and a list of string prompts."""
    base = {"model": model, "max_tokens": 1, "temperature": 0}
    return {
        "completion string prompt": {**base, "prompt": _prose(30, 90)},
        "completion list of prompts": {
            **base,
            "prompt": [_prose(5, 130), DIGITS * 4, CHINESE * 3, PUNCTUATION * 3],
        },
    }


def finding_body(model: str) -> dict[str, Any]:
    """The review's finding 4 at its own size: 66 long tools, about 59 KB, max_tokens 1.
    Beyond the e2e engine's context: the engine counts it with /tokenize."""
    return _chat(model, [_user("Find the records.")], tools=tools(66), tool_choice="auto")


def encode(body: dict[str, Any]) -> bytes:
    """Compact JSON, raw UTF-8: the fewest bytes for the same request."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def corpus(model: str) -> dict[str, tuple[str, bytes]]:
    """Every body, by name, with its route."""
    chats = {name: (CHAT, encode(body)) for name, body in chat_bodies(model).items()}
    completions = {n: (COMPLETIONS, encode(b)) for n, b in completion_bodies(model).items()}
    return {**chats, **completions}
