"""Answers recorded from the real vLLM engine (tests/gateway/data, see its README),
the ways to compare two answers, and an engine app that serves them.

Two answers are "the same" when they are equal field for field once the fields a
fresh answer always changes are replaced by placeholders: ``id``, ``created``, and
each tool-call id (numbered in order of first appearance, so an id used twice must
be renewed to the same new id, and two different ids to two different ones).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DATA = Path(__file__).parent / "data"
MODEL = "SmolLM2-135M-Instruct"
RECORDED = sorted(p.stem for p in DATA.glob("recorded_*.json"))
CRAFTED = sorted(p.stem for p in DATA.glob("crafted_*.json"))
# Complete answers in both shapes (the stream-error recording's stream is not one).
COMPLETE = [name for name in RECORDED + CRAFTED if name != "recorded_completion_stream_error"]


def load(name: str) -> dict[str, Any]:
    recorded: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return recorded


def events(sse: str) -> list[str]:
    """The data of each event in an SSE text."""
    return [line.removeprefix("data: ") for line in sse.split("\n") if line.startswith("data: ")]


def normalized(answer: dict[str, Any] | list[str]) -> Any:
    """A body (parsed) or a stream (its events' data) with fresh-by-nature fields
    replaced by placeholders."""
    tools: dict[str, str] = {}

    def visit(value: Any, in_call: bool = False) -> Any:
        if isinstance(value, list):
            return [visit(item, in_call) for item in value]
        if not isinstance(value, dict):
            return value
        return {
            k: tools.setdefault(v, f"<tool-call-{len(tools)}>")
            if k == "id" and in_call
            else visit(v, in_call or k == "tool_calls")
            for k, v in value.items()
        }

    def one(obj: dict[str, Any]) -> Any:
        head = {k: v for k, v in obj.items() if k not in ("id", "created")}
        head["choices"] = visit(obj.get("choices"))
        return head

    if isinstance(answer, dict):
        return one(answer)
    return [data if data == "[DONE]" else one(json.loads(data)) for data in answer]


def sdk_body(route: str, body: dict[str, Any]) -> Any:
    """The OpenAI SDK's object for a body, with placeholders for fresh fields. Built as
    the SDK builds responses (``construct``, lenient: vLLM's echoed prompt logprobs
    start with null, which strict validation refuses)."""
    model = ChatCompletion if route.endswith("chat/completions") else Completion
    return model.construct(**{**normalized(body), "id": "-", "created": 0})


def sdk_stream(route: str, stream: list[str]) -> Any:
    """What the OpenAI SDK makes of a stream: for chat, the chunks accumulated into
    one completion (as ``client.chat.completions.stream`` does); for completions,
    the parsed chunks."""
    chunks = [
        {**event, "id": "-", "created": 0} for event in normalized(stream) if event != "[DONE]"
    ]
    if not route.endswith("chat/completions"):
        return [Completion.construct(**chunk) for chunk in chunks]
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks:
        list(state.handle_chunk(ChatCompletionChunk.construct(**chunk)))
    return state.current_completion_snapshot  # (get_final_completion refuses "length")


def tool_calls(stream: list[str]) -> list[tuple[int, int, str | None, str | None, str]]:
    """Every tool call of a stream: (choice, index, id, name, arguments)."""
    calls: dict[tuple[int, int], list[Any]] = {}
    for data in stream:
        if data == "[DONE]":
            continue
        for choice in json.loads(data)["choices"]:
            for call in (choice.get("delta") or {}).get("tool_calls") or []:
                merged = calls.setdefault((choice["index"], call["index"]), [None, None, ""])
                function = call.get("function") or {}
                merged[0] = merged[0] or call.get("id")
                merged[1] = merged[1] or function.get("name")
                merged[2] += function.get("arguments") or ""
    return [(c, i, *values) for (c, i), values in sorted(calls.items())]


def _key(route: str, body: dict[str, Any]) -> tuple[str, str]:
    return route, json.dumps(body.get("messages") or body.get("prompt"))


class RecordedEngine:
    """Serves the recorded answers, as vLLM sent them, to the request recorded with
    them (matched on route and messages or prompt). A stream asked with
    ``continuous_usage_stats`` (as the gateway asks) gets the events recorded so,
    one with ``include_usage`` alone the other recording. Counts the generations."""

    def __init__(self, names: list[str]) -> None:
        self.answers = {_key(a["route"], a["request"]): a for a in map(load, names)}
        self.generations = 0
        routes = [
            Route(path, self._generate, methods=["POST"]) for path in {k[0] for k in self.answers}
        ]
        self.app = Starlette(
            routes=[Route("/health", self._health), Route("/v1/models", self._models), *routes]
        )

    async def _health(self, _: Request) -> Response:
        return Response(status_code=200)

    async def _models(self, _: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _generate(self, request: Request) -> Response:
        body = json.loads(await request.body())
        answer = self.answers[_key(request.url.path, body)]
        self.generations += 1
        if not body.get("stream"):
            return Response(answer["body"], media_type="application/json")
        options = body.get("stream_options") or {}
        shape = "stream" if options.get("continuous_usage_stats") else "stream_usage_only"

        async def sse() -> Any:
            for data in answer[shape]:
                yield f"data: {data}\n\n".encode()

        return StreamingResponse(sse(), media_type="text/event-stream")
