"""The response cache in front of the real engine (started with the hermes tool
parser), seen through the real OpenAI SDK and LangChain: a hit is the same answer,
only faster. A streamed and a non-streamed request are different entries, each the
answer as the engine sent it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import ADMIN, MODEL, Stack
from tests.gateway.recorded_answers import normalized

pytestmark = pytest.mark.e2e

WEATHER_TOOL = {
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


def _key(redis_gateway: str, name: str) -> str:
    created = httpx.post(
        f"{redis_gateway}/admin/keys",
        json={"name": name},
        headers={"Authorization": f"Bearer {ADMIN}"},
    ).json()
    key: str = created["key"]
    return key


def _client(redis_gateway: str) -> openai.OpenAI:
    key = _key(redis_gateway, "cache-e2e")
    return openai.OpenAI(base_url=f"{redis_gateway}/v1", api_key=key, max_retries=0)


def _question(text: str = "What is the capital of France?") -> list[dict[str, str]]:
    # A fresh question per test, so entries from other tests cannot answer it. The tag
    # changes what the small model says, so these tests compare replays with the
    # fresh answer rather than look for "Paris" (test_openai_sdk.py does that).
    return [{"role": "user", "content": f"{text} ({uuid.uuid4().hex[:6]})"}]


def test_repeated_deterministic_request_is_served_once_by_the_engine(
    stack: Stack, redis_gateway: str
) -> None:
    client, messages = _client(redis_gateway), _question()
    before = stack.engine_generation_requests()
    first = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=30
    )
    second = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=30
    )
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    one, two = first.parse(), second.parse()
    assert one.choices[0].message.content == two.choices[0].message.content
    assert one.usage == two.usage
    assert stack.engine_generation_requests() == before + 1
    client.close()


def test_each_shape_is_its_own_entry_and_hits_equal_fresh_answers(
    stack: Stack, redis_gateway: str
) -> None:
    """Forced tool calls with logprobs, n=2, plain then streamed then each again: each
    hit equals the fresh answer of its shape, field for field but for renewed ids."""
    client = _client(redis_gateway)
    request: dict[str, Any] = {
        "model": MODEL, "messages": _question("What is the weather in Paris?"),
        "tools": [WEATHER_TOOL], "tool_choice": "required", "temperature": 0.7, "seed": 7,
        "n": 2, "max_tokens": 60, "logprobs": True, "top_logprobs": 3,
    }  # fmt: skip
    answers: dict[bool, list[tuple[str, Any]]] = {False: [], True: []}
    before = stack.engine_generation_requests()
    for stream in (False, True, False, True):
        raw = client.chat.completions.with_raw_response.create(**request, stream=stream)
        if stream:
            answer: Any = [c.model_dump_json(exclude_unset=True) for c in raw.parse()]
        else:
            answer = json.loads(raw.text)
        answers[stream].append((raw.headers["x-cache"], answer))
    assert stack.engine_generation_requests() == before + 2  # one per shape
    for (fresh_cache, fresh), (hit_cache, hit) in answers.values():
        assert (fresh_cache, hit_cache) == ("miss", "hit")
        assert normalized(hit) == normalized(fresh)
    body = answers[False][1][1]
    calls = [c for choice in body["choices"] for c in choice["message"].get("tool_calls") or []]
    assert calls  # a hit carries the engine's tool calls
    streamed_calls = [
        call
        for data in answers[True][1][1]
        for choice in json.loads(data)["choices"]
        for call in (choice.get("delta") or {}).get("tool_calls") or []
    ]
    assert streamed_calls  # so does a streamed hit (the finding: it had none)
    client.close()


def test_stream_options_are_honoured_on_a_hit(stack: Stack, redis_gateway: str) -> None:
    client, messages = _client(redis_gateway), _question()
    args = {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 30}
    usage_opt = {"include_usage": True}
    fresh = list(client.chat.completions.create(**args, stream=True, stream_options=usage_opt))
    before = stack.engine_generation_requests()
    raw = client.chat.completions.with_raw_response.create(
        **args, stream=True, stream_options=usage_opt
    )
    assert raw.headers["x-cache"] == "hit"
    replayed = list(raw.parse())
    text = lambda chunks: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # noqa: E731
    assert text(replayed) == text(fresh)
    assert text(replayed).strip()  # (the tagged question changes the answer; equality is the point)
    assert replayed[-1].usage == fresh[-1].usage
    assert [c.usage for c in replayed[:-1]] == [None] * (len(replayed) - 1)  # not asked
    bare = list(client.chat.completions.create(**args, stream=True))
    assert text(bare) == text(fresh)
    assert all(c.usage is None for c in bare)
    assert stack.engine_generation_requests() == before  # all hits: the engine saw nothing
    client.close()


def _ids_removed(message: Any) -> dict[str, Any]:
    """An AIMessage's content and tool calls, without the fresh-by-nature ids."""
    calls = [{k: v for k, v in c.items() if k != "id"} for c in message.tool_calls]
    invalid = [{k: v for k, v in c.items() if k != "id"} for c in message.invalid_tool_calls]
    return {"content": message.content, "tool_calls": calls, "invalid": invalid}


def test_langchain_tool_calls_are_the_same_from_a_hit(stack: Stack, redis_gateway: str) -> None:
    """LangChain's pattern: invoke, then stream the same request; each twice."""
    from langchain_core.messages import AIMessageChunk
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=f"{redis_gateway}/v1", api_key=_key(redis_gateway, "cache-langchain"),
        model=MODEL, temperature=0, max_tokens=200, max_retries=0,  # room to finish the call
        include_response_headers=True,
    )  # fmt: skip
    tools = llm.bind_tools([WEATHER_TOOL], tool_choice="get_weather")
    question = _question("What is the weather in Paris?")[0]["content"]
    before = stack.engine_generation_requests()
    invoked = [tools.invoke(question) for _ in range(2)]
    streamed = []
    for _ in range(2):
        chunks = list(tools.stream(question))
        merged = chunks[0]
        for chunk in chunks[1:]:
            merged = merged + chunk
        assert isinstance(merged, AIMessageChunk)
        streamed.append((chunks[0].response_metadata["headers"]["x-cache"], merged, len(chunks)))
    assert stack.engine_generation_requests() == before + 2  # one per shape
    assert [m.response_metadata["headers"]["x-cache"] for m in invoked] == ["miss", "hit"]
    assert [x_cache for x_cache, _, _ in streamed] == ["miss", "hit"]
    assert _ids_removed(invoked[1]) == _ids_removed(invoked[0])
    assert _ids_removed(streamed[1][1]) == _ids_removed(streamed[0][1])
    assert streamed[1][2] == streamed[0][2]  # as many chunks as the engine sent
    ids = [[c["id"] for c in (*m.tool_calls, *m.invalid_tool_calls)] for m in invoked]
    assert ids[0]  # the forced call
    assert not set(ids[0]) & set(ids[1])  # renewed on a hit: agents key history on them
    assert streamed[1][1].tool_call_chunks  # a streamed hit carries the call too
