"""Cached answers: assembled from what the engine sent, replayed in the shape
the client asked for.

An entry is the complete non-streamed answer (``body``, exactly what
``stream=false`` returns) plus, when it was assembled from a stream, the
content ``pieces`` each choice arrived in. A non-stream hit returns ``body``; a
stream hit is rebuilt as SSE with a fresh answer's structure: a role chunk
(chat), content chunks, a final chunk with ``finish_reason``, the usage chunk
if ``stream_options.include_usage`` was asked, then ``[DONE]``. Only complete
answers (every choice finished with stop, length or tool_calls) become entries.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

COMPLETE = frozenset({"stop", "length", "tool_calls"})
_WORDS = re.compile(r"\s*\S+|\s+$")


def is_complete(body: dict[str, Any]) -> bool:
    choices = body.get("choices")
    return (
        isinstance(choices, list)
        and bool(choices)
        and all(isinstance(c, dict) and c.get("finish_reason") in COMPLETE for c in choices)
    )


def entry_from_body(body: bytes) -> dict[str, Any] | None:
    """A non-streamed engine answer as an entry, if it is complete."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or not is_complete(payload):
        return None
    return {"body": payload, "pieces": None}


class StreamAssembler:
    """Rebuilds the non-streamed answer from a stream's events as they pass."""

    def __init__(self, chat: bool) -> None:
        self._chat = chat
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._pieces: dict[int, list[str]] = {}
        self._usage: dict[str, Any] | None = None
        self.done = False
        self.broken = False  # logprobs on completions, tool-call shapes we do not merge

    def add(self, data: bytes) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            self.broken = True
            return
        if not isinstance(event, dict) or "error" in event:
            self.broken = True
            return
        for key in ("id", "model", "created", "system_fingerprint"):
            self._head.setdefault(key, event.get(key))
        if isinstance(event.get("usage"), dict):
            self._usage = event["usage"]
        for choice in event.get("choices") or []:
            self._merge(choice)

    def _merge(self, choice: dict[str, Any]) -> None:
        index = int(choice.get("index", 0))
        merged = self._choices.setdefault(index, self._empty(index))
        pieces = self._pieces.setdefault(index, [])
        if choice.get("finish_reason"):
            merged["finish_reason"] = choice["finish_reason"]
        if self._chat:
            delta = choice.get("delta") or {}
            if delta.get("tool_calls") or choice.get("logprobs"):
                self.broken = True  # replayed streams carry content only
            if isinstance(delta.get("content"), str) and delta["content"]:
                merged["message"]["content"] += delta["content"]
                pieces.append(delta["content"])
        else:
            if choice.get("logprobs"):
                self.broken = True
            if isinstance(choice.get("text"), str) and choice["text"]:
                merged["text"] += choice["text"]
                pieces.append(choice["text"])

    def _empty(self, index: int) -> dict[str, Any]:
        if self._chat:
            message = {"role": "assistant", "content": ""}
            return {"index": index, "message": message, "logprobs": None, "finish_reason": None}
        return {"index": index, "text": "", "logprobs": None, "finish_reason": None}

    def entry(self) -> dict[str, Any] | None:
        """The entry, or None if the stream was not a complete, replayable answer."""
        if not self.done or self.broken or not self._choices:
            return None
        body = {
            **self._head,
            "object": "chat.completion" if self._chat else "text_completion",
            "choices": [self._choices[i] for i in sorted(self._choices)],
            "usage": self._usage,
        }
        if not is_complete(body):
            return None
        return {"body": body, "pieces": [self._pieces[i] for i in sorted(self._pieces)]}


def _fresh(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    prefix = "chatcmpl-" if chat else "cmpl-"
    return {**body, "id": prefix + uuid.uuid4().hex, "created": int(time.time())}


def replay_body(entry: dict[str, Any], chat: bool) -> bytes:
    return json.dumps(_fresh(entry["body"], chat)).encode()


def replay_stream(entry: dict[str, Any], chat: bool, include_usage: bool) -> list[bytes]:
    """SSE events for a stream hit, in a fresh answer's order."""
    body = _fresh(entry["body"], chat)
    head = {k: body.get(k) for k in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk" if chat else "text_completion"
    events: list[dict[str, Any]] = []
    for position, choice in enumerate(body["choices"]):
        index = choice.get("index", position)
        if chat:
            text = (choice.get("message") or {}).get("content") or ""
        else:
            text = choice.get("text") or ""
        stored = entry.get("pieces")
        pieces = stored[position] if stored else _WORDS.findall(text)
        if chat:
            events.append(_chunk(head, index, {"delta": {"role": "assistant", "content": ""}}))
        for piece in pieces:
            field: dict[str, Any] = {"delta": {"content": piece}} if chat else {"text": piece}
            events.append(_chunk(head, index, field))
        last: dict[str, Any] = {"delta": {}} if chat else {"text": ""}
        events.append(_chunk(head, index, {**last, "finish_reason": choice.get("finish_reason")}))
    if include_usage and body.get("usage"):
        events.append({**head, "choices": [], "usage": body["usage"]})
    out = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    return [*out, b"data: [DONE]\n\n"]


def _chunk(head: dict[str, Any], index: int, fields: dict[str, Any]) -> dict[str, Any]:
    choice = {"index": index, "logprobs": None, "finish_reason": None, **fields}
    return {**head, "choices": [choice]}
