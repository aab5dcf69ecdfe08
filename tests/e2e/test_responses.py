"""The Responses API end to end: the OpenAI SDK and LangChain, unchanged, against
Portico in front of the real vLLM CPU engine, compared with what the same engine
answers directly. The session's engine runs with vLLM's own response store on
(``VLLM_ENABLE_RESPONSES_API_STORE=1``) only so that direct follow-ups have something
to compare with: Portico always sends ``store: false`` and keeps responses itself."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI

from tests.e2e.conftest import ADMIN, MODEL, Stack

pytestmark = pytest.mark.e2e

QUESTION = "What is the capital of France?"
FOLLOW_UP = "And of Italy?"
SETTINGS: dict[str, Any] = {"model": MODEL, "temperature": 0, "max_output_tokens": 24}


@pytest.fixture
def portico(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key=stack.api_key, max_retries=0) as c:
        yield c


@pytest.fixture
def direct(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.engine_url + "/v1", api_key="none", max_retries=0) as c:
        yield c


def test_a_response_is_the_engines_own_answer(
    portico: openai.OpenAI, direct: openai.OpenAI
) -> None:
    through = portico.responses.create(input=QUESTION, **SETTINGS)
    own = direct.responses.create(input=QUESTION, **SETTINGS)
    assert through.output_text == own.output_text
    assert "Paris" in through.output_text
    assert through.usage is not None
    assert own.usage is not None
    assert through.usage.input_tokens == own.usage.input_tokens
    assert through.usage.output_tokens == own.usage.output_tokens
    assert through.status == own.status


def test_a_streamed_response_relays_the_engines_events(
    portico: openai.OpenAI, direct: openai.OpenAI
) -> None:
    def stream(client: openai.OpenAI) -> tuple[list[str], str, str]:
        with client.responses.stream(input=QUESTION, **SETTINGS) as events:
            kinds: list[str] = []
            deltas: list[str] = []
            for event in events:
                kinds.append(event.type)
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
            return kinds, "".join(deltas), events.get_final_response().output_text

    through_kinds, through_text, through_final = stream(portico)
    own_kinds, own_text, _ = stream(direct)
    assert through_kinds == own_kinds  # every typed event, in the engine's order
    assert through_kinds[-1] == "response.completed"
    assert through_text == own_text == through_final
    assert len([k for k in through_kinds if k.endswith(".delta")]) > 3


def test_a_follow_up_answers_as_the_engines_own_store_would(
    portico: openai.OpenAI, direct: openai.OpenAI, stack: Stack
) -> None:
    own_first = direct.responses.create(input=QUESTION, **SETTINGS)
    own = direct.responses.create(input=FOLLOW_UP, previous_response_id=own_first.id, **SETTINGS)
    first = portico.responses.create(input=QUESTION, **SETTINGS)
    second = portico.responses.create(input=FOLLOW_UP, previous_response_id=first.id, **SETTINGS)
    assert second.output_text == own.output_text
    assert second.usage is not None
    assert own.usage is not None
    assert second.usage.input_tokens == own.usage.input_tokens  # the same conversation
    assert second.previous_response_id == first.id
    kept = portico.responses.retrieve(second.id)
    assert kept.output_text == second.output_text
    assert kept.id == second.id
    # The engine kept nothing of Portico's responses, although its own store is on.
    assert httpx.get(f"{stack.engine_url}/v1/responses/{first.id}", timeout=10).status_code == 404


def test_a_streamed_follow_up_continues_a_streamed_response(portico: openai.OpenAI) -> None:
    with portico.responses.stream(input=QUESTION, **SETTINGS) as events:
        first = events.get_final_response()
    with portico.responses.stream(
        input=FOLLOW_UP, previous_response_id=first.id, **SETTINGS
    ) as events:
        second = events.get_final_response()
    plain = portico.responses.create(input=FOLLOW_UP, previous_response_id=first.id, **SETTINGS)
    assert second.output_text == plain.output_text
    assert portico.responses.retrieve(second.id).output_text == second.output_text


def _langchain(base_url: str, api_key: str) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=base_url,
        api_key=api_key,
        model=MODEL,
        temperature=0,
        max_tokens=24,
        max_retries=0,
        use_responses_api=True,
    )


def test_langchain_on_the_responses_api_invokes_and_streams_as_directly(stack: Stack) -> None:
    through = _langchain(stack.base_url, stack.api_key)
    own = _langchain(stack.engine_url + "/v1", "none")
    message = through.invoke(QUESTION)
    assert isinstance(message, AIMessage)
    assert message.text == own.invoke(QUESTION).text
    assert "Paris" in message.text
    chunks = list(through.stream(QUESTION))
    assert len(chunks) > 3
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(c.text for c in chunks) == "".join(c.text for c in own.stream(QUESTION))


def test_the_reservation_covers_a_follow_ups_whole_conversation(
    redis_gateway: str, stack: Stack
) -> None:
    """The gateway inlines the conversation; its estimate must not fall below what the
    engine counts for it, or a tenant's tpm could be passed with long conversations."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    name = f"responses-{uuid.uuid4().hex[:6]}"
    created = httpx.post(
        f"{redis_gateway}/admin/keys", json={"name": name, "tpm": 100_000}, headers=admin
    )
    assert created.status_code == 201, created.text
    auth = {"Authorization": f"Bearer {created.json()['key']}"}
    previous, settled = None, 0  # the turns before, settled to their usage
    for turn in ("Name a fruit.", "Name another.", "And a third?"):
        answer = httpx.post(
            f"{redis_gateway}/v1/responses",
            json={"input": turn, "previous_response_id": previous, **SETTINGS},
            headers=auth,
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        reserved = 100_000 - int(answer.headers["x-ratelimit-remaining-tokens"]) - settled
        usage = answer.json()["usage"]
        assert reserved >= usage["input_tokens"] + SETTINGS["max_output_tokens"], turn
        settled += usage["total_tokens"]
        previous = answer.json()["id"]
