"""Record answers from a real vLLM engine as cache test data.

Usage (an engine started with ``--enable-auto-tool-choice --tool-call-parser hermes``)::

    .venv/bin/python -m tests.gateway.data.record_answers http://127.0.0.1:8000

Each case is sent three times: once plain (the JSON body), once streamed with the
``stream_options`` the gateway asks of the engine on every stream (``include_usage``
and ``continuous_usage_stats``: what a cache entry is recorded from), once streamed
with ``include_usage`` alone (what vLLM itself sends a client that did not ask for
per-chunk usage). Every answer is saved exactly as the engine sent it: the body's
text, and each SSE event's data.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx

MODEL = "SmolLM2-135M-Instruct"
HERE = Path(__file__).parent
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
# Seeded sampling: repeatable (so cacheable), and vLLM refuses n=2 with greedy decoding.
SAMPLING = {"temperature": 0.7, "seed": 7, "n": 2}
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
CHAT_LOGPROBS = {"logprobs": True, "top_logprobs": 3}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat_tool_required": (
        "/v1/chat/completions",
        {"messages": WEATHER, "tools": TOOLS, "tool_choice": "required", "max_tokens": 60,
         **CHAT_LOGPROBS},
    ),
    "chat_tool_named": (
        "/v1/chat/completions",
        {"messages": WEATHER, "tools": TOOLS, "max_tokens": 60, **CHAT_LOGPROBS,
         "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    ),
    "chat_text": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16,
         **CHAT_LOGPROBS},
    ),
    "completion": (
        "/v1/completions",
        {"prompt": "The capital of France is", "max_tokens": 12, "logprobs": 2, "echo": True,
         "seed": 8},
    ),
    # With this seed vLLM 0.32's completion stream fails half-way (a KeyError in its
    # logprobs code): an error event, then [DONE]. Such an answer must not be cached.
    "completion_stream_error": (
        "/v1/completions",
        {"prompt": "The capital of France is", "max_tokens": 12, "logprobs": 2, "echo": True},
    ),
}  # fmt: skip
STREAMS = {
    "stream": {"include_usage": True, "continuous_usage_stats": True},
    "stream_usage_only": {"include_usage": True},
}


def _events(client: httpx.Client, route: str, body: dict[str, Any]) -> list[str]:
    with client.stream("POST", route, json=body) as response:
        response.raise_for_status()
        return [line.removeprefix("data: ") for line in response.iter_lines() if line]


def record(engine_url: str) -> None:
    with httpx.Client(base_url=engine_url, timeout=300) as client:
        for name, (route, fields) in CASES.items():
            request = {"model": MODEL, **SAMPLING, **fields}
            body = client.post(route, json=request)
            body.raise_for_status()
            recorded: dict[str, Any] = {"route": route, "request": request, "body": body.text}
            for shape, options in STREAMS.items():
                streamed = {**request, "stream": True, "stream_options": options}
                recorded[shape] = _events(client, route, streamed)
            path = HERE / f"recorded_{name}.json"
            path.write_text(json.dumps(recorded, indent=1, ensure_ascii=False) + "\n")
            print(path)


if __name__ == "__main__":
    record(sys.argv[1])
