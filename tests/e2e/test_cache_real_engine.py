"""The response cache in front of the real engine, seen through the real
OpenAI SDK: a hit is the same answer, only faster, in either shape."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from tests.e2e.conftest import ADMIN, MODEL, Stack

pytestmark = pytest.mark.e2e


def _client(redis_gateway: str) -> openai.OpenAI:
    created = httpx.post(
        f"{redis_gateway}/admin/keys",
        json={"name": "cache-e2e"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    ).json()
    return openai.OpenAI(base_url=f"{redis_gateway}/v1", api_key=created["key"], max_retries=0)


def _question() -> list[dict[str, str]]:
    # A fresh question per test, so entries from other tests cannot answer it. The tag
    # changes what the small model says, so these tests compare replays with the
    # fresh answer rather than look for "Paris" (test_openai_sdk.py does that).
    return [{"role": "user", "content": f"What is the capital of France? ({uuid.uuid4().hex[:6]})"}]


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


def test_stream_answer_replays_as_stream_and_as_body(stack: Stack, redis_gateway: str) -> None:
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
    assert [c.choices[0].finish_reason for c in replayed if c.choices][-1] == "stop"
    body = client.chat.completions.with_raw_response.create(**args)
    assert body.headers["x-cache"] == "hit"
    assert body.parse().choices[0].message.content == text(fresh)
    assert body.parse().usage == fresh[-1].usage
    assert stack.engine_generation_requests() == before  # both hits: the engine saw nothing
    client.close()


def test_langchain_gets_the_same_answer_from_a_replay(stack: Stack, redis_gateway: str) -> None:
    from langchain_openai import ChatOpenAI

    created = httpx.post(
        f"{redis_gateway}/admin/keys",
        json={"name": "cache-langchain"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    ).json()
    llm = ChatOpenAI(
        base_url=f"{redis_gateway}/v1", api_key=created["key"], model=MODEL,
        temperature=0, max_tokens=30, max_retries=0,
    )  # fmt: skip
    question = _question()[0]["content"]
    fresh = [str(c.content) for c in llm.stream(question)]
    before = stack.engine_generation_requests()
    replayed = [str(c.content) for c in llm.stream(question)]
    invoked = str(llm.invoke(question).content)
    assert stack.engine_generation_requests() == before  # both answered by the cache
    assert "".join(replayed) == "".join(fresh) == invoked
    assert len(replayed) > 3  # still a stream of several chunks
