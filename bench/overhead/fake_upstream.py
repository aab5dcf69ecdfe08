"""A tiny, fast OpenAI-compatible upstream that answers instantly.

It exists only so the benchmark measures the gateway, not an engine. A raw
ASGI app under uvicorn (uvloop + httptools): no framework, fixed pre-encoded
bodies, no validation.

    python -m bench.overhead.fake_upstream --port 9000 [--stream-gap-ms 2]

GET /health, GET /v1/models (one model, ``bench-model``), POST /v1/completions
and /v1/chat/completions: a fixed small JSON body, or with ``"stream": true``
a few SSE chunks then ``data: [DONE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvicorn

MODEL = "bench-model"
STREAM_CHUNKS = 5

Scope = dict[str, Any]
Message = dict[str, Any]


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _answer(chat: bool, kind: str, choice: dict[str, Any], **extra: Any) -> bytes:
    """An answer (or a chunk of one) with a single choice, encoded."""
    head = {"id": "chatcmpl-bench" if chat else "cmpl-bench", "object": kind, "created": 1700000000}
    return _encode({**head, "model": MODEL, "choices": [choice], **extra})


USAGE = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
HELLO = {"role": "assistant", "content": "Hello! How can I help you today?"}
CHAT_BODY = _answer(
    True, "chat.completion", {"index": 0, "message": HELLO, "finish_reason": "stop"}, usage=USAGE
)
COMPLETION = {"index": 0, "text": " Hello! How can I help?", "finish_reason": "stop"}
COMPLETION_BODY = _answer(False, "text_completion", COMPLETION, usage=USAGE)
MODEL_CARD = {"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "bench"}
MODELS_BODY = _encode({"object": "list", "data": [MODEL_CARD]})
NOT_FOUND_BODY = _encode({"error": {"message": "not found", "type": "not_found"}})


def _chunk(index: int, chat: bool) -> bytes:
    finish = "stop" if index == STREAM_CHUNKS - 1 else None
    choice: dict[str, Any] = {"index": 0, "text": f" tok{index}", "finish_reason": finish}
    if chat:
        delta = {"role": "assistant", "content": ""} if index == 0 else {"content": f" tok{index}"}
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
    kind = "chat.completion.chunk" if chat else "text_completion"
    return b"data: " + _answer(chat, kind, choice) + b"\n\n"


DONE = b"data: [DONE]\n\n"
CHAT_STREAM = [_chunk(i, chat=True) for i in range(STREAM_CHUNKS)] + [DONE]
COMPLETION_STREAM = [_chunk(i, chat=False) for i in range(STREAM_CHUNKS)] + [DONE]

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _wants_stream(body: bytes) -> bool:
    if b'"stream"' not in body:  # the common case skips JSON parsing entirely
        return False
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("stream") is True


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message: Message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body", False):
            return body


class FakeUpstream:
    """The raw ASGI app. ``stream_gap_s`` separates SSE chunks (0: back to back)."""

    def __init__(self, stream_gap_s: float) -> None:
        self.stream_gap_s = stream_gap_s

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # lifespan is switched off; nothing else is expected
        path = scope["path"]
        if scope["method"] == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            body = await _read_body(receive)
            chat = path == "/v1/chat/completions"
            if _wants_stream(body):
                await self._stream(send, CHAT_STREAM if chat else COMPLETION_STREAM)
                return
            await _whole(send, 200, CHAT_BODY if chat else COMPLETION_BODY)
        elif scope["method"] == "GET" and path == "/health":
            await _whole(send, 200, b"")
        elif scope["method"] == "GET" and path == "/v1/models":
            await _whole(send, 200, MODELS_BODY)
        else:
            await _whole(send, 404, NOT_FOUND_BODY)

    async def _stream(self, send: Any, chunks: list[bytes]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        for index, chunk in enumerate(chunks):
            if index and self.stream_gap_s > 0:
                await asyncio.sleep(self.stream_gap_s)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _whole(send: Any, status: int, body: bytes) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stream-gap-ms", type=float, default=0.0, help="pause between SSE chunks")
    args = parser.parse_args()
    uvicorn.run(
        FakeUpstream(args.stream_gap_ms / 1000),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
