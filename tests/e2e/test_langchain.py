"""LangChain's ChatOpenAI pointed at Portico, nothing else changed."""

from __future__ import annotations

import pytest
from langchain_openai import ChatOpenAI

from tests.e2e.conftest import MODEL, Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def llm(stack: Stack) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=stack.base_url,
        api_key=stack.api_key,
        model=MODEL,
        temperature=0,
        max_tokens=30,
        max_retries=0,
    )


def test_invoke_answers_paris(llm: ChatOpenAI) -> None:
    message = llm.invoke("What is the capital of France?")
    assert "Paris" in str(message.content)


def test_stream_yields_several_chunks_that_join_to_the_answer(llm: ChatOpenAI) -> None:
    chunks = list(llm.stream("What is the capital of France?"))
    assert len(chunks) > 3
    assert "Paris" in "".join(str(c.content) for c in chunks)
