"""A small fault-injecting stand-in for vLLM, for what the real engine cannot be
made to do on demand. The completion ``prompt`` picks the behaviour; prompts
starting with ``hold`` take a second. Every answer's id names the engine
(``cmpl-<name>``), so routing tests can tell which engine answered.

``python -m uvicorn --factory tests.gateway.fake_engine:from_env`` serves one as
its own process (``FAKE_ENGINE_NAME``, ``FAKE_ENGINE_MODELS``), for tests that
kill an engine outright."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

MODEL = "fake-model"
OTHER_MODEL = "fake-model-2"
# What the fake reports as usage for every answer: settlement tests compare to it.
USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
RESPONSE_USAGE = {"input_tokens": 12, "output_tokens": 4, "total_tokens": 16}


def _chunk(text: str, finish: bool = False, generated: int | None = None) -> bytes:
    """One SSE event; ``generated``: the running completion-token count vLLM adds to
    every event when asked for ``continuous_usage_stats`` (in vLLM's compact JSON)."""
    choice = {"index": 0, "text": text, "finish_reason": "length" if finish else None}
    payload: dict[str, Any] = {"object": "text_completion", "model": MODEL, "choices": [choice]}
    if generated is None:
        return b"data: " + json.dumps(payload).encode() + b"\n\n"
    prompt = USAGE["prompt_tokens"]
    payload["usage"] = {
        "prompt_tokens": prompt,
        "total_tokens": prompt + generated,
        "completion_tokens": generated,
    }
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class FakeEngine:
    """Records what it received; behaves according to the prompt."""

    def __init__(self, name: str = "fake", models: tuple[str, ...] = (MODEL, OTHER_MODEL)) -> None:
        self.name = name
        self.models = models
        self.fail_status: int | None = None  # set: every completion fails with it
        self.healthy = True  # False: /health answers 503, as vLLM's does when its engine died
        self.dies_failing = False  # with fail_status: the failure is its engine core dying
        self.version: str | None = "0.0.0-fake"  # what /version reports; None: no such route
        self.version_asked = 0
        self.received: list[bytes] = []
        self.stream_closed = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/health", self._health),
                Route("/v1/models", self._models),
                Route("/version", self._version),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/responses", self._responses, methods=["POST"]),
            ]
        )

    async def _health(self, _: Request) -> Response:
        return Response(status_code=200 if self.healthy else 503)

    async def _version(self, _: Request) -> Response:
        self.version_asked += 1
        if self.version is None:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return JSONResponse({"version": self.version})

    async def _models(self, _: Request) -> Response:
        data = [{"id": name, "object": "model"} for name in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _embeddings(self, request: Request) -> Response:
        """A 3-dimensional vector per input, in vLLM's compact JSON; usage as USAGE's
        prompt, 5 tokens per input."""
        raw = await request.body()
        self.received.append(raw)
        if self.fail_status is not None:
            error = {"message": f"{self.name} fails", "type": "Error"}
            return JSONResponse({"error": error}, status_code=self.fail_status)
        body = json.loads(raw)
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and isinstance(inputs[0], list | str) else 1
        vectors: list[Any] = [[0.5, float(i), -1.0] for i in range(count)]
        if body.get("encoding_format") == "base64":  # little-endian float32, as vLLM's
            vectors = [base64.b64encode(struct.pack("<3f", *v)).decode() for v in vectors]
        data = [{"index": i, "object": "embedding", "embedding": v} for i, v in enumerate(vectors)]
        usage = {"prompt_tokens": 5 * count, "total_tokens": 5 * count}
        answer = {"id": f"embd-{self.name}", "object": "list", "created": 1, "model": MODEL}
        text = json.dumps({**answer, "data": data, "usage": usage}, separators=(",", ":"))
        return Response(text, media_type="application/json")

    async def _responses(self, request: Request) -> Response:
        """A Responses API answer under the request's ``request_id`` (as vLLM names it):
        text ``<engine name>: <items> items``, usage RESPONSE_USAGE; streamed as vLLM's
        typed events, an input of "stall-mid-stream" stalling after the first delta."""
        raw = await request.body()
        self.received.append(raw)
        body = json.loads(raw)
        items = body["input"] if isinstance(body["input"], list) else [body["input"]]
        text = f"{self.name}: {len(items)} items"
        part = {"type": "output_text", "text": text, "annotations": []}
        message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                   "content": [part]}  # fmt: skip
        response = {
            "id": body.get("request_id", "resp_engine"),
            "object": "response",
            "model": body["model"],
            "status": "completed",
            "store": body.get("store", True),
            "previous_response_id": body.get("previous_response_id"),
            "output": [message],
            "usage": RESPONSE_USAGE,
        }
        if not body.get("stream"):
            return JSONResponse(response)
        stall = body["input"] == "stall-mid-stream"
        events = self._response_events(response, stall)
        return StreamingResponse(events, media_type="text/event-stream")

    async def _response_events(self, response: dict[str, Any], stall: bool) -> Any:
        """vLLM's sequence of events for one message (its member order, too)."""
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        message = response["output"][0]
        text = message["content"][0]["text"]
        at: dict[str, Any] = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        events: list[dict[str, Any]] = [
            {"response": started, "type": "response.created"},
            {"response": started, "type": "response.in_progress"},
            {"item": {**message, "content": [], "status": "in_progress"}, "output_index": 0,
             "type": "response.output_item.added"},
            {**at, "part": {**message["content"][0], "text": ""},
             "type": "response.content_part.added"},
            *({**at, "delta": word, "logprobs": [], "type": "response.output_text.delta"}
              for word in text.split(" ")),
            {**at, "text": text, "logprobs": [], "type": "response.output_text.done"},
            {**at, "part": message["content"][0], "type": "response.content_part.done"},
            {"item": message, "output_index": 0, "type": "response.output_item.done"},
            {"response": response, "type": "response.completed"},
        ]  # fmt: skip
        try:
            for n, event in enumerate(events):
                data = json.dumps({**event, "sequence_number": n}, separators=(",", ":"))
                yield f"event: {event['type']}\ndata: {data}\n\n".encode()
                if stall and event["type"] == "response.output_text.delta":
                    await asyncio.sleep(3600)
        finally:
            self.stream_closed.set()

    async def _completions(self, request: Request) -> Response:
        raw = await request.body()
        self.received.append(raw)
        body = json.loads(raw)
        behaviour = str(body.get("prompt"))
        if self.fail_status is not None:
            self.healthy = self.healthy and not self.dies_failing
            error = {"message": f"{self.name} fails", "type": "Error"}
            return JSONResponse({"error": error}, status_code=self.fail_status)
        if behaviour.startswith("hold"):
            await asyncio.sleep(1.0)
        if behaviour == "slow-first-byte":
            await asyncio.sleep(5)
        if behaviour == "slow-ok":
            await asyncio.sleep(0.5)
        if behaviour == "error-500":
            error = {"message": "engine exploded", "type": "InternalServerError", "code": 500}
            return JSONResponse({"error": error}, status_code=500)
        if behaviour == "busy-503":
            return JSONResponse({"error": {"message": "queue full"}}, status_code=503)
        if not body.get("stream"):
            choice = {"index": 0, "text": "ok", "finish_reason": "length"}
            answer = {"id": f"cmpl-{self.name}", "object": "text_completion", "choices": [choice]}
            return JSONResponse({**answer, "usage": USAGE})
        options = body.get("stream_options") or {}
        if options.get("continuous_usage_stats") and behaviour == "batched-events":
            # Like vLLM with --stream-interval 100: every event carries 100 tokens.
            return StreamingResponse(self._batched(), media_type="text/event-stream")
        usage = bool(options.get("include_usage"))
        return StreamingResponse(self._stream(behaviour, usage), media_type="text/event-stream")

    async def _batched(self) -> Any:
        try:
            for i in range(1, 1000):
                yield _chunk("word " * 100, generated=100 * i)
                await asyncio.sleep(0.05)
        finally:
            self.stream_closed.set()

    async def _stream(self, behaviour: str, usage: bool) -> Any:
        try:
            for i in range(3):
                yield _chunk(f"t{i}", finish=i == 2)
            if behaviour == "die-mid-stream":
                raise RuntimeError("engine died")  # uvicorn drops the connection half-way
            if behaviour == "stall-mid-stream":
                await asyncio.sleep(30)
            if behaviour == "slow-stream":
                for _ in range(10):
                    await asyncio.sleep(0.2)
                    yield _chunk("more")
            if behaviour == "endless":
                while True:
                    yield _chunk("more")
                    await asyncio.sleep(0.05)
            if usage:
                payload = {"object": "text_completion", "choices": [], "usage": USAGE}
                yield b"data: " + json.dumps(payload).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            self.stream_closed.set()


def recording(app: ASGIApp, seen: list[str]) -> ASGIApp:
    """``app`` noting the path of every request other than the gateway's health, model
    and version probes (the fake itself records only completion bodies)."""

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in ("/health", "/v1/models", "/version"):
            seen.append(scope["path"])
        await app(scope, receive, send)

    return recorded


def from_env() -> Starlette:
    """A fake engine app configured by FAKE_ENGINE_NAME / FAKE_ENGINE_MODELS (comma-separated)."""
    models = tuple(os.environ.get("FAKE_ENGINE_MODELS", MODEL).split(","))
    return FakeEngine(os.environ.get("FAKE_ENGINE_NAME", "fake"), models).app
