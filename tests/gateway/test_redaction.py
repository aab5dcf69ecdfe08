"""PII redaction through the real app: what the engine receives on both generation
routes, streamed or not, with redaction on and off (the fake engine records every
body it gets), the metric, and the cache key over the redacted text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, USAGE, FakeEngine
from tests.gateway.servers import serving
from tests.redaction_cases import LEAKS, MEDIA_PARTS, PII, UNKNOWN_PARTS

KEY = "redaction-key"
AUTH = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
PII_PROMPT = "Mail jane@example.com or call +44 20 7946 0958 about card 4111 1111 1111 1111."
REDACTED = "Mail [EMAIL] or call [PHONE] about card [CARD]."


def _chat_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    payload = {"id": "chat-fake", "object": "chat.completion.chunk", "model": MODEL,
               "choices": [choice]}  # fmt: skip
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _with_chat_route(fake: FakeEngine) -> FakeEngine:
    """The shared fake engine answers /v1/completions only; a chat route for these tests."""

    async def chat(request: Request) -> Response:
        raw = await request.body()
        fake.received.append(raw)
        body = json.loads(raw)
        if not body.get("stream"):
            message = {"role": "assistant", "content": "ok"}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return JSONResponse({"id": "chat-fake", "object": "chat.completion", "model": MODEL,
                                 "choices": [choice], "usage": USAGE})  # fmt: skip

        async def events() -> Any:
            yield _chat_chunk({"role": "assistant", "content": "ok"})
            yield _chat_chunk({}, finish="stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"object": "chat.completion.chunk", "choices": [], "usage": USAGE}
                yield b"data: " + json.dumps(usage).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    fake.app.router.routes.append(Route("/v1/chat/completions", chat, methods=["POST"]))
    return fake


@pytest.fixture
def fake() -> FakeEngine:
    return _with_chat_route(FakeEngine())


def _gateway(fake: FakeEngine, **redaction: Any) -> Iterator[httpx.Client]:
    with serving(fake.app) as engine_url:
        settings = GatewaySettings(
            engine_url=engine_url, api_keys=[KEY], redaction=redaction,
            upstream={"first_byte_s": 2.0, "stream_idle_s": 1.0},
        )  # fmt: skip
        with (
            serving(create_app(settings)) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            yield client


@pytest.fixture
def redacting(fake: FakeEngine) -> Iterator[httpx.Client]:
    yield from _gateway(fake, mode="redact")


@pytest.fixture
def plain(fake: FakeEngine) -> Iterator[httpx.Client]:
    yield from _gateway(fake)  # the default: off


def _redactions(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "portico_redactions_total"
    }


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(path, content=json.dumps(body).encode(), headers=AUTH)


def _sent(received: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The members of what the engine received that the client sent (the gateway may
    append its own, such as max_tokens when unset)."""
    return {k: received.get(k) for k in body}


def _client_bytes_kept(received: bytes, raw: bytes) -> bool:
    """The client's bytes, not a re-serialisation: the same up to the closing brace,
    after which the gateway may append members of its own."""
    head = raw.rstrip()[:-1].rstrip()
    return received == raw or (received.startswith(head) and received[len(head) :][:1] == b",")


def test_completion_prompt_reaches_the_engine_redacted_other_fields_untouched(
    redacting: httpx.Client, fake: FakeEngine
) -> None:
    body = {"model": MODEL, "prompt": [PII_PROMPT, "SSN 123-45-6789"], "max_tokens": 5,
            "top_k": 3, "user": "jane@example.com", "stop": ["x@example.com"]}  # fmt: skip
    response = _post(redacting, "/v1/completions", body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"] == "ok"
    received = json.loads(fake.received[-1])
    assert received["prompt"] == [REDACTED, "SSN [SSN]"]
    assert _sent(received, body) == {**body, "prompt": [REDACTED, "SSN [SSN]"]}
    assert _redactions(redacting) == {"email": 1.0, "phone": 1.0, "card": 1.0, "ssn": 1.0}


def test_streamed_completion_is_redacted_and_streams_normally(
    redacting: httpx.Client, fake: FakeEngine
) -> None:
    body = {"model": MODEL, "prompt": PII_PROMPT, "max_tokens": 5, "stream": True}
    response = _post(redacting, "/v1/completions", body)
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    assert "usage" not in response.text  # the usage the gateway asked for is stripped
    received = json.loads(fake.received[-1])
    assert received["prompt"] == REDACTED
    assert received["stream_options"]["include_usage"] is True


@pytest.mark.parametrize("stream", [False, True])
def test_chat_messages_reach_the_engine_redacted_images_untouched(
    redacting: httpx.Client, fake: FakeEngine, stream: bool
) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://img.example/a@example.com.png"}}
    messages = [
        {"role": "system", "content": "Customer NI number AB 12 34 56 C."},
        {"role": "user", "content": [{"type": "text", "text": PII_PROMPT}, image]},
    ]
    body = {"model": MODEL, "messages": messages, "max_tokens": 5, "stream": stream}
    response = _post(redacting, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    if stream:
        assert response.text.endswith("data: [DONE]\n\n")
    else:
        assert response.json()["choices"][0]["message"]["content"] == "ok"
    received = json.loads(fake.received[-1])["messages"]
    assert received[0]["content"] == "Customer NI number [NINO]."
    assert received[1]["content"] == [{"type": "text", "text": REDACTED}, image]
    assert _redactions(redacting) == {"nino": 1.0, "email": 1.0, "phone": 1.0, "card": 1.0}


def test_the_cache_key_covers_the_redacted_prompt(
    redacting: httpx.Client, fake: FakeEngine
) -> None:
    def ask(email: str) -> httpx.Response:
        body = {"model": MODEL, "prompt": f"Write to {email}", "temperature": 0}
        return _post(redacting, "/v1/completions", body)

    first, second = ask("jane@example.com"), ask("bob@example.org")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert len(fake.received) == 1  # the engine saw "Write to [EMAIL]" once


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/completions",
         b'{"prompt":  "jane@example.com 4111 1111 1111 1111",\n "model": "fake-model"}'),
        ("/v1/chat/completions",
         b'{ "model":"fake-model", "messages":[{"role":"user","content":"SSN 123-45-6789"}] }'),
    ],
)  # fmt: skip
def test_off_by_default_the_engine_gets_the_clients_bytes(
    plain: httpx.Client, fake: FakeEngine, path: str, raw: bytes
) -> None:
    response = plain.post(path, content=raw, headers=AUTH)
    assert response.status_code == 200, response.text
    assert len(fake.received) == 1
    assert _client_bytes_kept(fake.received[0], raw)
    assert _redactions(plain) == {}


def test_a_body_with_nothing_to_redact_is_forwarded_byte_for_byte(
    redacting: httpx.Client, fake: FakeEngine
) -> None:
    raw = b'{"prompt":  "released 2024-01-15, v1.2.3, $1,234.56",  "model": "fake-model"}'
    assert redacting.post("/v1/completions", content=raw, headers=AUTH).status_code == 200
    assert len(fake.received) == 1
    assert _client_bytes_kept(fake.received[0], raw)


@pytest.mark.parametrize(("path", "body"), LEAKS.values(), ids=LEAKS.keys())
def test_every_field_and_part_vllm_renders_reaches_the_engine_redacted(
    redacting: httpx.Client, fake: FakeEngine, path: str, body: dict[str, Any]
) -> None:
    response = _post(redacting, path, body)
    assert response.status_code == 200, response.text
    received = fake.received[-1].decode()
    assert PII not in received
    expected = json.loads(json.dumps(body).replace(PII, "[EMAIL]"))
    assert _sent(json.loads(received), expected) == expected
    assert _redactions(redacting) == {"email": 1.0}


def _with_part(part: dict[str, Any]) -> dict[str, Any]:
    content = [{"type": "text", "text": "Describe this."}, part]
    return {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": content}]}


@pytest.mark.parametrize("part", UNKNOWN_PARTS.values(), ids=UNKNOWN_PARTS.keys())
def test_with_redaction_on_an_unknown_part_type_is_refused_before_the_engine(
    redacting: httpx.Client, fake: FakeEngine, part: dict[str, Any]
) -> None:
    response = _post(redacting, "/v1/chat/completions", _with_part(part))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages.0.content.1.type"
    assert error["code"] == "unsupported_content_part"
    assert PII not in response.text
    assert fake.received == []


def test_with_redaction_off_an_unknown_part_type_goes_to_the_engine(
    plain: httpx.Client, fake: FakeEngine
) -> None:
    body = _with_part(UNKNOWN_PARTS["file"])
    assert _post(plain, "/v1/chat/completions", body).status_code == 200
    assert _sent(json.loads(fake.received[-1]), body) == body


def test_known_media_parts_reach_the_engine_untouched(
    redacting: httpx.Client, fake: FakeEngine
) -> None:
    body = _with_part(MEDIA_PARTS["image_url"])
    body["messages"][0]["content"] += [*MEDIA_PARTS.values(), {"type": "text", "text": PII}]
    assert _post(redacting, "/v1/chat/completions", body).status_code == 200
    content = json.loads(fake.received[-1])["messages"][0]["content"]
    assert content[:-1] == body["messages"][0]["content"][:-1]
    assert content[-1] == {"type": "text", "text": "[EMAIL]"}
