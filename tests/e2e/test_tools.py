"""Tool calling through Portico on the bundled model, started exactly as `make run`
starts it: the engine's defaults (the hermes parser, Portico's chat template) make
requests with ``tools`` work. The 135M model's own tool calls are often malformed,
so answers to ``tool_choice="auto"`` are not judged; a named ``tool_choice`` makes
vLLM constrain the call, so its shape is checked."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.e2e.conftest import MODEL, Stack

pytestmark = pytest.mark.e2e

# strict: vLLM pins the arguments to the schema (the enum keeps them short), not only
# the call's envelope.
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Lyon", "Nice"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED: Any = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=stack.api_key, max_retries=0)


def test_request_with_tools_and_auto_choice_is_answered(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="auto", max_tokens=40
    )
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 100  # the tool's schema is in the prompt


def test_named_tool_choice_returns_that_call_with_json_arguments(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice=NAMED, max_tokens=100
    )
    calls = reply.choices[0].message.tool_calls
    assert calls, reply.choices[0].message
    call: Any = calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Lyon", "Nice")


def test_named_tool_choice_streams_that_call_with_json_arguments(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice=NAMED, max_tokens=100,
        stream=True,
    )  # fmt: skip
    names: list[str] = []
    arguments = ""
    for chunk in stream:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if delta.function is not None:
                names += [delta.function.name] if delta.function.name else []
                arguments += delta.function.arguments or ""
    assert names == ["get_weather"]
    assert json.loads(arguments)["city"] in ("Paris", "Lyon", "Nice")


def test_follow_up_with_the_call_and_its_result_is_answered(client: openai.OpenAI) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    history: Any = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ]
    reply = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER], max_tokens=30
    )
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0


def test_message_with_a_list_of_text_parts_is_answered(client: openai.OpenAI) -> None:
    parts: Any = [
        {"type": "text", "text": "What is the capital"},
        {"type": "text", "text": "of France?"},
    ]
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": parts}], max_tokens=20
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
