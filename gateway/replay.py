"""Cached answers: recorded exactly as the engine sent them, replayed as recorded.

An entry holds one answer in the shape it was asked for (the shape is part of the
key, see :mod:`gateway.cache_key`): a non-streamed answer is the engine's JSON
body as it came; a streamed one is the engine's SSE events, in order, as it sent
them. Nothing is converted from one shape to the other, so every field the engine
returns (tool-call deltas, logprobs, reasoning, refusal, fields added later)
comes back as it was. Converting is where fidelity was lost: a body split into a
synthetic stream carried content only (tool calls and logprobs vanished).

A replay differs from the recording only where a fresh answer would: a fresh
``id`` (``chatcmpl-``/``cmpl-`` and the request id, as the engine names the
answers the gateway forwards), a fresh ``created``, and fresh tool-call ids (each
recorded id mapped to one new id through the whole answer: agents key their
history on them). A stream replay honours the hitting client's ``stream_options``
as the relay does: the gateway asks the engine for usage on every event and a
final usage-only event, so a recording holds both (as ``cuts``: spans of the
recorded bytes) and the replay leaves out what this client did not ask for.

Only complete answers are recorded: every choice finished (stop, length,
tool_calls), a stream ended by ``[DONE]`` with no error event, every event a JSON
object whose ids the replay can renew. Anything else is not cached.

A hit is byte work on the recorded answer, kept as bytes (``blob``) next to a
small JSON header: no JSON is parsed or built per event, none of the answer is
escaped into JSON for storage (decoding 40 KB of escaped JSON alone took longer
than the rest of a hit).
"""

from __future__ import annotations

import json
import re
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

from gateway.protocol import USAGE_MEMBER

COMPLETE = frozenset({"stop", "length", "tool_calls"})
# Kinds of cut: an event's usage (continuous_usage_stats); the final usage-only
# event (include_usage).
RUNNING_USAGE, FINAL_USAGE = "u", "f"
_USAGE_KEY = b',"usage":'
# The random part of a tool-call id (vLLM: chatcmpl-tool-<16 hex>; Mistral: 9 alnum).
_RANDOM_TAIL = re.compile(r"[0-9A-Za-z]{8,}$")
_HEX = frozenset("0123456789abcdef")
_ALNUM = string.ascii_letters + string.digits
_HEADER = ("shape", "cuts", "id", "created", "tools")


@dataclass(frozen=True)
class Delivery:
    """What the hitting request asked for beyond the answer itself."""

    request_id: str
    id_prefix: str  # chatcmpl-, cmpl- or embd-: as the engine names this route's answers
    usage: bool = False  # stream_options.include_usage: the final usage-only event
    running_usage: bool = False  # stream_options.continuous_usage_stats


class _Answer:
    """What recording learns from an answer's JSON objects: the ids a replay must
    renew and how each choice finished."""

    def __init__(self, part: str) -> None:
        self._part = part  # "message" in a body, "delta" in a stream's events
        self.ids: set[str] = set()
        self.created: set[int] = set()
        self.tools: dict[str, None] = {}  # tool-call ids, in order of appearance
        self.finished: dict[int, object] = {}

    def note(self, payload: object) -> bool:
        """Take in one JSON object; False if it is not part of a replayable answer."""
        if not isinstance(payload, dict) or "error" in payload:
            return False
        choices = payload.get("choices")
        if not isinstance(choices, list):
            return False
        if isinstance(payload.get("id"), str):
            self.ids.add(payload["id"])
        if isinstance(payload.get("created"), int):
            self.created.add(payload["created"])
        return all(self._choice(choice) for choice in choices)

    def _choice(self, choice: object) -> bool:
        if not isinstance(choice, dict) or not isinstance(choice.get("index"), int):
            return False
        finish = self.finished.setdefault(choice["index"], None)
        self.finished[choice["index"]] = choice.get("finish_reason") or finish
        part = choice.get(self._part)
        calls = part.get("tool_calls") if isinstance(part, dict) else None
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                self.tools[call["id"]] = None
        return True

    def complete(self) -> bool:
        """Every choice finished, and at most one id and one created to renew."""
        return (
            bool(self.finished)
            and sorted(self.finished) == list(range(len(self.finished)))
            and all(reason in COMPLETE for reason in self.finished.values())
            and len(self.ids) <= 1
            and len(self.created) <= 1
        )

    def entry(self, shape: str, blob: bytes, cuts: list[list[Any]]) -> dict[str, Any] | None:
        """The entry; None if the replay could not find an id to renew in the bytes
        (written in some other way than vLLM's compact JSON)."""
        entry = {
            "shape": shape,
            "blob": blob,
            "cuts": cuts,
            "id": next(iter(self.ids), None),
            "created": next(iter(self.created), None),
            "tools": list(self.tools),
        }
        return _renewable(entry)


def _renewable(entry: dict[str, Any]) -> dict[str, Any] | None:
    """``entry``, or None if the replay could not find each id to renew in its bytes."""
    blob: bytes = entry["blob"]
    return entry if all(old in blob for old, _ in _renames(entry, Delivery("", ""))) else None


def _embeddings_entry(payload: dict[str, Any], body: bytes) -> dict[str, Any] | None:
    """An embeddings answer (``object: list``): complete when every item is a vector;
    its id and created are renewed as a completion's are."""
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        return None
    if not all(isinstance(item, dict) and item.get("object") == "embedding" for item in data):
        return None
    ident, created = payload.get("id"), payload.get("created")
    return _renewable(
        {
            "shape": "body",
            "blob": body,
            "cuts": [],
            "id": ident if isinstance(ident, str) else None,
            "created": created if isinstance(created, int) else None,
            "tools": [],
        }
    )


def entry_from_body(body: bytes) -> dict[str, Any] | None:
    """A non-streamed engine answer as an entry, if it is complete."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if isinstance(payload, dict) and payload.get("object") == "list":
        return _embeddings_entry(payload, body)
    answer = _Answer("message")
    if not answer.note(payload) or not answer.complete():
        return None
    return answer.entry("body", body, [])


class StreamRecorder:
    """Records a stream's events as they pass (``add`` gets each event's data as the
    engine sent it, then ``b"[DONE]"``); gives up, and frees what it held, as soon
    as the answer cannot become an entry (an error, or more than ``max_bytes``)."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._answer = _Answer("delta")
        self._blob = bytearray()
        self._cuts: list[list[Any]] = []  # [start, end, kind] spans of the blob
        self._done = False
        self._failed = False

    def add(self, data: bytes) -> None:
        if self._failed:
            return
        if self._done:
            self._fail()  # anything after [DONE]
        elif data == b"[DONE]":
            self._done = True
        elif not self._event(data) or len(self._blob) > self._max:
            self._fail()

    def _event(self, data: bytes) -> bool:
        try:
            payload = json.loads(data)
        except ValueError:
            return False
        if not self._answer.note(payload):
            return False
        if "usage" not in payload:
            self._blob += b"data: " + data + b"\n\n"
        elif not payload["choices"]:
            self._cut(FINAL_USAGE, b"data: " + data + b"\n\n")
        else:
            return self._split_usage(data, payload["usage"])
        return True

    def _split_usage(self, data: bytes, usage: object) -> bool:
        """Keep an event's own usage apart, so a replay can leave it out as the relay
        does. vLLM writes it after the choices: the last ``,"usage":`` is the event's."""
        match = USAGE_MEMBER.match(data, max(data.rfind(_USAGE_KEY), 0))
        if match is None or json.loads(match.group()[len(_USAGE_KEY) :]) != usage:
            return False  # written some other way: not replayable without it
        self._blob += b"data: " + data[: match.start()]
        self._cut(RUNNING_USAGE, match.group())
        self._blob += data[match.end() :] + b"\n\n"
        return True

    def _cut(self, kind: str, text: bytes) -> None:
        self._cuts.append([len(self._blob), len(self._blob) + len(text), kind])
        self._blob += text

    def _fail(self) -> None:
        self._failed = True
        self._blob, self._cuts = bytearray(), []

    def entry(self) -> dict[str, Any] | None:
        """The entry, or None if the stream was not a complete, replayable answer."""
        if self._failed or not self._done or not self._answer.complete():
            return None
        return self._answer.entry("stream", bytes(self._blob), self._cuts)


def dump(entry: dict[str, Any]) -> bytes:
    """An entry as bytes to store: a JSON header line, then the answer as recorded."""
    header = {name: entry[name] for name in _HEADER}
    blob: bytes = entry["blob"]
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + blob


def load(raw: bytes) -> dict[str, Any] | None:
    """An entry from its stored bytes; None for anything this version did not write."""
    header, newline, blob = raw.partition(b"\n")
    try:
        entry = json.loads(header)
    except ValueError:
        return None
    if not newline or not isinstance(entry, dict) or set(entry) != set(_HEADER):
        return None
    if entry["shape"] not in ("body", "stream") or not isinstance(entry["cuts"], list):
        return None
    return {**entry, "blob": blob}


def replay(entry: dict[str, Any], delivery: Delivery) -> bytes:
    """The recorded answer with fresh ids, as the hitting request asked for it."""
    blob: bytes = entry["blob"]
    dropped = [cut for cut in entry["cuts"] if not _wanted(cut[2], delivery)]
    if dropped:
        kept, start = [], 0
        for cut_start, cut_end, _ in dropped:
            kept.append(blob[start:cut_start])
            start = cut_end
        kept.append(blob[start:])
        blob = b"".join(kept)
    for old, new in _renames(entry, delivery):
        blob = blob.replace(old, new)
    return blob + b"data: [DONE]\n\n" if entry["shape"] == "stream" else blob


def _wanted(kind: str, delivery: Delivery) -> bool:
    return delivery.usage if kind == FINAL_USAGE else delivery.running_usage


def _renames(entry: dict[str, Any], delivery: Delivery) -> list[tuple[bytes, bytes]]:
    """(recorded, fresh) pairs of JSON text. Ids are matched with their quotes, so
    the same characters inside a string value (where quotes are escaped) never are."""
    renames = []
    if entry["id"] is not None:
        fresh = f"{delivery.id_prefix}{delivery.request_id}-{secrets.token_hex(4)}"
        renames.append((_quoted(entry["id"]), _quoted(fresh)))
    if entry["created"] is not None:  # the answer's only one (see _Answer.complete)
        old, new = entry["created"], int(time.time())
        renames.append((b'"created":%d' % old, b'"created":%d' % new))
    renames.extend((_quoted(old), _quoted(_fresh_tool_id(old))) for old in entry["tools"])
    return renames


def _quoted(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _fresh_tool_id(recorded: str) -> str:
    """The id with its random tail drawn again, in the same alphabet and length. An
    id without one (a deterministic scheme, such as Kimi's ``functions.name:0``)
    stays: the engine itself would give it again."""
    tail = _RANDOM_TAIL.search(recorded)
    if tail is None:
        return recorded
    size = len(tail.group())
    if _HEX.issuperset(tail.group()):
        fresh = secrets.token_hex(size // 2 + 1)[:size]
    else:
        fresh = "".join(secrets.choice(_ALNUM) for _ in range(size))
    return recorded[: tail.start()] + fresh
