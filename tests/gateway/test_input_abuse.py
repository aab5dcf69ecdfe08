"""Abusive input gets a small 4xx in the OpenAI error shape, quickly, that never echoes
the input, and it never reaches the engine: oversized and slow bodies, deep nesting,
huge numbers and lists, bad bytes, header floods. The gateway is the real app on a
real socket; the engine is a fake that records every generation request it gets."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway import rawhttp
from tests.gateway.fake_engine import MODEL, FakeEngine, recording
from tests.gateway.servers import serving

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CANARY = "CANARY-5b7e-abusive-input"
SMALL = 1024  # bytes: an error body is at most this
BOUND_S = 5.0  # "never hangs", generous on a loaded machine; answers take milliseconds
BODY_READ_S = 1.0
COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"


@dataclass
class Stack:
    url: str
    port: int
    engine_saw: list[str] = field(default_factory=list)  # paths of generation requests


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    seen: list[str] = []
    with serving(recording(FakeEngine().app, seen)) as engine_url:
        settings = GatewaySettings(
            engine_url=engine_url, api_keys=[KEY], limits={"body_read_s": BODY_READ_S}
        )
        with serving(create_app(settings)) as url:
            yield Stack(url, int(url.rsplit(":", 1)[1]), seen)


@pytest.fixture
def gateway(stack: Stack) -> Iterator[httpx.Client]:
    stack.engine_saw.clear()
    with httpx.Client(base_url=stack.url, headers=AUTH, timeout=30) as client:
        yield client
        assert client.get("/healthz").status_code == 200
        good = client.post(COMPLETIONS, json={"model": MODEL, "prompt": "fine"})
        assert good.status_code == 200, "the gateway must serve normally after the abuse"


def _refused(
    body: bytes, elapsed: float, code: str | None = None, param: str | None = None
) -> None:
    """The checks every refusal passes: quick, small, no echo, the OpenAI shape."""
    assert elapsed < BOUND_S
    assert len(body) < SMALL
    assert CANARY.encode() not in body
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


def _post(client: httpx.Client, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post(path, **kwargs)
    return response, time.monotonic() - started


def _completion(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": CANARY, **extra}


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": CANARY}], **extra}


HUGE = 987654321987654321987654321  # must not appear in the answer either

CAPPED = [
    pytest.param(COMPLETIONS, _completion(max_tokens=HUGE), "max_tokens", id="max-tokens"),
    pytest.param(CHAT, _chat(max_completion_tokens=HUGE), "max_completion_tokens",
                 id="max-completion-tokens"),
    pytest.param(COMPLETIONS, _completion(n=HUGE), "n", id="n"),
    pytest.param(CHAT, _chat(n=10_000), "n", id="chat-n"),
    pytest.param(COMPLETIONS, _completion(best_of=HUGE), "best_of", id="best-of"),
    pytest.param(COMPLETIONS, _completion(logprobs=HUGE), "logprobs", id="logprobs"),
    pytest.param(COMPLETIONS, _completion(logprobs=-1), "logprobs", id="logprobs-negative"),
    pytest.param(CHAT, _chat(logprobs=True, top_logprobs=HUGE), "top_logprobs",
                 id="top-logprobs"),
    pytest.param(COMPLETIONS, _completion(seed=2**64), "seed", id="seed-beyond-int64"),
    pytest.param(COMPLETIONS, _completion(stop=[CANARY] * 10_000), "stop", id="stop-10k-list"),
    pytest.param(COMPLETIONS, _completion(stop=[f"{CANARY}{i}" for i in range(17)]), "stop",
                 id="stop-17-sequences"),
    pytest.param(CHAT, _chat(stop=CANARY * 38_000), "stop", id="stop-1mb-string"),
    pytest.param(COMPLETIONS, {"model": MODEL, "prompt": [[7, 7]] * 100_000}, "prompt",
                 id="prompt-100k-token-arrays"),
    pytest.param(COMPLETIONS, {"model": MODEL, "prompt": [CANARY] * 20_000}, "prompt",
                 id="prompt-20k-strings"),
    pytest.param(CHAT, _chat(temperature=CANARY), "temperature", id="string-for-a-number"),
    pytest.param(CHAT, _chat(messages=[{"role": CANARY, "content": "x"}]), "messages.0.role",
                 id="unknown-role"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "param"), CAPPED)
def test_out_of_range_field_is_a_400_naming_it(
    stack: Stack, gateway: httpx.Client, path: str, body: dict[str, Any], param: str
) -> None:
    raw = json.dumps(body).encode()
    assert len(raw) < 1_048_576, "the case must be refused by its cap, not the body limit"
    response, elapsed = _post(gateway, path, content=raw)
    assert response.status_code == 400
    _refused(response.content, elapsed, param=param)
    assert str(HUGE) not in response.text
    assert stack.engine_saw == []


MALFORMED = [
    pytest.param(b"[" * 100_000, id="100k-nested-arrays"),
    pytest.param(b'{"a":' * 100_000, id="100k-nested-objects"),
    pytest.param(f'{{"model":"{MODEL}","prompt":"{CANARY}","x":'.encode() + b"[" * 100_000,
                 id="deep-nesting-in-an-extra-field"),
    pytest.param(f'{{"model":"{MODEL}","prompt":"\xff\xfe{CANARY}"}}'.encode("latin-1"),
                 id="invalid-utf8"),
    pytest.param(f'{{"model":"{MODEL}","prompt":"\\ud800{CANARY}"}}'.encode(),
                 id="lone-surrogate-escape"),
    pytest.param(f'{{"model":"{MODEL}","prompt":"x","max_tokens":{"9" * 5000}}}'.encode(),
                 id="5000-digit-number"),
    pytest.param(f"{CANARY} is not json".encode(), id="not-json"),
    pytest.param(f'{{"model":"{MODEL}","prompt":"{CANARY}"'.encode(), id="truncated-json"),
    pytest.param(f'["{CANARY}"]'.encode(), id="array-not-object"),
    pytest.param(f'"{CANARY}"'.encode(), id="string-not-object"),
    pytest.param(b"null", id="null"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\xef\xbb\xbf" + json.dumps(_completion()).encode(), id="utf8-bom"),
]  # fmt: skip


@pytest.mark.parametrize("raw", MALFORMED)
def test_unparseable_body_is_a_400(stack: Stack, gateway: httpx.Client, raw: bytes) -> None:
    response, elapsed = _post(gateway, COMPLETIONS, content=raw)
    assert response.status_code == 400
    _refused(response.content, elapsed)
    assert stack.engine_saw == []


def test_any_content_type_is_read_as_json(stack: Stack, gateway: httpx.Client) -> None:
    """The body must be JSON whatever the Content-Type says (``curl -d`` sends a form type);
    documented in docs/reliability.md."""
    body = json.dumps({"model": MODEL, "prompt": "fine"})
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response, _ = _post(gateway, COMPLETIONS, content=body,
                            headers={"content-type": content_type})  # fmt: skip
        assert response.status_code == 200
    form, elapsed = _post(gateway, COMPLETIONS, data={"prompt": CANARY})
    assert form.status_code == 400
    _refused(form.content, elapsed, code="invalid_json")
    assert stack.engine_saw == [COMPLETIONS, COMPLETIONS]


def test_body_over_the_limit_declared_is_a_413(stack: Stack, gateway: httpx.Client) -> None:
    response, elapsed = _post(gateway, CHAT, json=_chat(messages=[
        {"role": "user", "content": CANARY * 60_000}]))  # fmt: skip
    assert response.status_code == 413
    _refused(response.content, elapsed, code="request_too_large")
    assert response.headers["connection"] == "close"
    assert stack.engine_saw == []


def test_body_over_the_limit_chunked_is_a_413(stack: Stack, gateway: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield f'{{"model":"{MODEL}","prompt":"'.encode()
        for _ in range(40):
            yield CANARY.encode() * 2000  # 40 x 50 KB, no Content-Length

    response, elapsed = _post(gateway, COMPLETIONS, content=chunks())
    assert response.status_code == 413
    _refused(response.content, elapsed, code="request_too_large")
    assert stack.engine_saw == []


def test_huge_declared_length_is_refused_before_any_byte_of_body(
    stack: Stack, gateway: httpx.Client
) -> None:
    head = _head(COMPLETIONS, [("content-length", "10000000000")])
    status, _, body, elapsed = _exchange(stack.port, head)
    assert status == 413
    _refused(body, elapsed, code="request_too_large")
    assert stack.engine_saw == []


def test_messages_over_the_body_limit_are_a_413(stack: Stack, gateway: httpx.Client) -> None:
    messages = [{"role": "user", "content": CANARY}] * 100_000
    response, elapsed = _post(gateway, CHAT, json=_chat(messages=messages))
    assert response.status_code == 413
    _refused(response.content, elapsed, code="request_too_large")
    assert stack.engine_saw == []


def test_many_messages_within_the_body_limit_are_forwarded(
    stack: Stack, gateway: httpx.Client
) -> None:
    """No count cap on messages: the body limit bounds them (one sequence; the engine
    enforces its context length). The fake engine has no chat route, so it answers 404."""
    messages = [{"role": "user", "content": "hi"}] * 20_000
    response, elapsed = _post(gateway, CHAT, json=_chat(messages=messages))
    assert elapsed < BOUND_S
    assert response.status_code == 404
    assert stack.engine_saw == [CHAT]


def test_a_model_name_is_echoed_only_truncated(stack: Stack, gateway: httpx.Client) -> None:
    response, elapsed = _post(gateway, COMPLETIONS, json={"model": "m" * 500_000, "prompt": "x"})
    assert response.status_code == 404
    assert elapsed < BOUND_S
    assert len(response.content) < SMALL
    assert stack.engine_saw == []


# Raw sockets: header floods and slow bodies are beyond what an HTTP client library sends.


def _head(path: str, headers: list[tuple[str, str]], auth: bool = True) -> bytes:
    lines = [("content-type", "application/json")]
    lines += [("authorization", f"Bearer {KEY}")] if auth else []
    return rawhttp.head("POST", path, [*lines, *headers])


def _exchange(
    port: int, head: bytes, body: bytes = b"", trickle_s: float | None = None
) -> tuple[int, dict[str, str], bytes, float]:
    """Status, headers, body and the seconds from the first byte sent (rawhttp.exchange)."""
    answer = rawhttp.exchange(port, head, body, trickle_s=trickle_s, wait_s=BOUND_S * 3)
    assert answer.status is not None, "no answer"
    return answer.status, answer.headers, answer.body, answer.elapsed


def _valid_body() -> bytes:
    return json.dumps({"model": MODEL, "prompt": CANARY}).encode()


HEADER_FLOODS = [
    pytest.param([("x-flood", CANARY * 40_000)], 431, id="1mb-header-value"),
    pytest.param([(f"x-flood-{i}", CANARY) for i in range(10_000)], 431, id="10k-headers"),
    pytest.param([(f"x-flood-{i}", "v") for i in range(101)], 431, id="101-headers"),
]


@pytest.mark.parametrize(("headers", "status"), HEADER_FLOODS)
def test_header_flood_is_a_431(
    stack: Stack, gateway: httpx.Client, headers: list[tuple[str, str]], status: int
) -> None:
    body = _valid_body()
    head = _head(COMPLETIONS, [*headers, ("content-length", str(len(body)))])
    got, answer_headers, payload, elapsed = _exchange(stack.port, head, body)
    assert got == status
    _refused(payload, elapsed, code="request_header_fields_too_large")
    assert answer_headers["connection"] == "close"
    assert stack.engine_saw == []


def test_long_request_target_is_a_414(stack: Stack, gateway: httpx.Client) -> None:
    body = _valid_body()
    head = _head(f"{COMPLETIONS}?q={CANARY * 500}", [("content-length", str(len(body)))])
    status, _, payload, elapsed = _exchange(stack.port, head, body)
    assert status == 414
    _refused(payload, elapsed, code="url_too_long")
    assert stack.engine_saw == []


def test_target_beyond_the_parser_is_a_plain_400_from_the_server(
    stack: Stack, gateway: httpx.Client
) -> None:
    """Past ~64 KiB uvicorn's parser refuses the request line itself, before the app
    runs: a plain-text 400 (not the OpenAI shape), connection closed."""
    head = _head(f"{COMPLETIONS}?q={CANARY * 40_000}", [("content-length", "2")])
    status, headers, payload, elapsed = _exchange(stack.port, head, b"{}")
    assert status == 400
    assert headers["connection"] == "close"
    assert elapsed < BOUND_S
    assert len(payload) < SMALL
    assert CANARY.encode() not in payload
    assert stack.engine_saw == []


SLOW_BODIES = [
    pytest.param(None, id="stalls-after-a-few-bytes"),
    pytest.param(0.05, id="trickles-a-byte-every-50ms"),
]


@pytest.mark.parametrize("trickle_s", SLOW_BODIES)
def test_slow_body_is_a_408_within_the_body_read_time(
    stack: Stack, gateway: httpx.Client, trickle_s: float | None
) -> None:
    body = _valid_body()
    head = _head(COMPLETIONS, [("content-length", str(len(body) + 10_000))])
    # Stalling: the whole body but 10,000 declared bytes never come. Trickling: each byte
    # comes quickly (no per-chunk timeout would fire), the whole would take 500 s.
    status, headers, payload, elapsed = _exchange(stack.port, head, body, trickle_s)
    assert status == 408
    _refused(payload, elapsed, code="request_timeout")
    assert BODY_READ_S * 0.9 <= elapsed < BOUND_S
    assert headers["connection"] == "close"
    assert stack.engine_saw == []


def test_slow_chunked_body_is_a_408(stack: Stack, gateway: httpx.Client) -> None:
    chunk = _valid_body()[:20]
    head = _head(COMPLETIONS, [("transfer-encoding", "chunked")])
    status, _, payload, elapsed = _exchange(stack.port, head + b"%x\r\n" % len(chunk) + chunk)
    assert status == 408
    _refused(payload, elapsed, code="request_timeout")
    assert stack.engine_saw == []


def test_slow_body_without_a_key_is_a_401_before_any_body_is_read(
    stack: Stack, gateway: httpx.Client
) -> None:
    head = _head(COMPLETIONS, [("content-length", "100000")], auth=False)
    status, _, payload, elapsed = _exchange(stack.port, head, b'{"model"')
    assert status == 401
    assert elapsed < BODY_READ_S  # refused on the headers, not after the body timeout
    assert len(payload) < SMALL
    assert stack.engine_saw == []


def test_client_leaving_mid_body_is_not_a_server_error(stack: Stack, gateway: httpx.Client) -> None:
    head = _head(COMPLETIONS, [("content-length", "100000")])
    with socket.create_connection(("127.0.0.1", stack.port)) as sock:
        sock.sendall(head + b'{"model":"' + CANARY.encode())
        time.sleep(0.2)
    time.sleep(0.3)  # the gateway notices the hang-up
    served = [line for line in gateway.get("/metrics").text.splitlines()
              if line.startswith("portico_requests_total")]  # fmt: skip
    assert served
    assert not [line for line in served if 'status_class="5xx"' in line]
    assert stack.engine_saw == []
