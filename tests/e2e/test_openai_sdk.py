"""The OpenAI SDK, unchanged, against Portico in front of the real vLLM CPU engine."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.e2e.conftest import EMBEDDING_MODEL, MODEL, Stack

pytestmark = pytest.mark.e2e

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=stack.api_key, max_retries=0)


def test_chat_answers_the_capital_of_france(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=FRANCE, temperature=0, max_tokens=30
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason == "stop"


def test_chat_usage_matches_what_the_engine_reports(client: openai.OpenAI, stack: Stack) -> None:
    body = {"model": MODEL, "messages": FRANCE, "temperature": 0, "max_tokens": 30}
    direct = httpx.post(f"{stack.engine_url}/v1/chat/completions", json=body, timeout=60).json()
    reply = client.chat.completions.create(
        model=MODEL, messages=FRANCE, temperature=0, max_tokens=30
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == direct["usage"]["prompt_tokens"] > 0
    assert reply.usage.completion_tokens == direct["usage"]["completion_tokens"] > 0
    assert reply.choices[0].message.content == direct["choices"][0]["message"]["content"]


def test_completion_returns_text_and_usage(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=5
    )
    assert reply.choices[0].text.strip()
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 5
    assert reply.choices[0].finish_reason == "length"


def test_chat_stream_arrives_in_several_chunks_and_says_paris(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=FRANCE,
        temperature=0,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_completion_stream_yields_the_requested_token_count(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
    )
    pieces = [c.choices[0].text for c in stream if c.choices]
    assert len(pieces) == 8


def test_models_lists_the_served_models(client: openai.OpenAI) -> None:
    # `make run` serves the chat model and the bundled embedding model.
    assert sorted(m.id for m in client.models.list()) == sorted([MODEL, EMBEDDING_MODEL])


def test_models_retrieve_answers_the_served_model_and_404_otherwise(
    client: openai.OpenAI,
) -> None:
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object) == (MODEL, "model")
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"


def test_structured_output_fits_the_json_schema(client: openai.OpenAI) -> None:
    import jsonschema

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name the capital of France as JSON."}],
        temperature=0,
        max_tokens=60,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "capital", "schema": schema, "strict": True},
        },
    )
    payload = json.loads(reply.choices[0].message.content or "")
    jsonschema.validate(payload, schema)


def test_n_two_returns_two_choices(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=4, n=2, temperature=1, seed=7
    )
    assert sorted(c.index for c in reply.choices) == [0, 1]


def test_logprobs_come_back(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=FRANCE, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs and reply.choices[0].logprobs.content
    assert content
    assert len(content) == 4
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


def test_vllm_extra_fields_reach_the_engine(client: openai.OpenAI) -> None:
    # top_k is vLLM's, not OpenAI's: the engine rejects -5, proving it saw the field.
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="Hi", max_tokens=2, extra_body={"top_k": -5})
    assert "top_k" in str(info.value)


def test_wrong_key_is_refused_with_openai_error(stack: Stack) -> None:
    bad = openai.OpenAI(base_url=stack.base_url, api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert info.value.status_code == 401
