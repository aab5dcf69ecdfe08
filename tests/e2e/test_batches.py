"""The Batch API end to end: the OpenAI SDK, unchanged, uploads a JSONL file, creates
a batch, polls it to ``completed`` and downloads the output, against Portico in front
of the real vLLM CPU engines. Each answer is compared with what the same engine
answers directly at temperature 0."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import EMBEDDING_MODEL, MODEL, Stack

pytestmark = pytest.mark.e2e

QUESTIONS = [f"What is {a} plus {a}?" for a in range(1, 7)]


@pytest.fixture
def portico(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key=stack.api_key, max_retries=0) as c:
        yield c


def _run(client: openai.OpenAI, tmp: Path, lines: list[dict[str, Any]], endpoint: str) -> Any:
    path = tmp / "batch.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with path.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )
    deadline = time.monotonic() + 300
    while batch.status not in {"completed", "failed", "expired", "cancelled"}:
        assert time.monotonic() < deadline, batch
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    return batch


def test_a_chat_batch_answers_each_line_as_the_engine_does(
    portico: openai.OpenAI, stack: Stack, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {"model": MODEL, "temperature": 0, "max_tokens": 12}
    lines = [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {**settings, "messages": [{"role": "user", "content": q}]},
        }
        for i, q in enumerate(QUESTIONS)
    ]
    batch = _run(portico, tmp_path, lines, "/v1/chat/completions")
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert batch.request_counts.completed == len(QUESTIONS)
    assert batch.request_counts.failed == 0
    assert batch.output_file_id is not None
    output = [
        json.loads(line) for line in portico.files.content(batch.output_file_id).text.splitlines()
    ]
    assert [o["custom_id"] for o in output] == [f"q{i}" for i in range(len(QUESTIONS))]
    with openai.OpenAI(base_url=stack.engine_url + "/v1", api_key="none", max_retries=0) as direct:
        for o, question in zip(output, QUESTIONS, strict=True):
            assert o["response"]["status_code"] == 200
            own = direct.chat.completions.create(
                messages=[{"role": "user", "content": question}], **settings
            )
            answer = o["response"]["body"]["choices"][0]["message"]["content"]
            assert answer == own.choices[0].message.content


def test_an_embeddings_batch_returns_one_vector_per_line(
    portico: openai.OpenAI, tmp_path: Path
) -> None:
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBEDDING_MODEL, "input": f"sentence number {i}"},
        }
        for i in range(4)
    ]
    batch = _run(portico, tmp_path, lines, "/v1/embeddings")
    assert batch.status == "completed", batch
    assert batch.output_file_id is not None
    output = [
        json.loads(line) for line in portico.files.content(batch.output_file_id).text.splitlines()
    ]
    assert [o["custom_id"] for o in output] == ["e0", "e1", "e2", "e3"]
    for o in output:
        vector = o["response"]["body"]["data"][0]["embedding"]
        assert len(vector) == 384
