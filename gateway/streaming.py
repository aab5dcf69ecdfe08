"""What the relay of a stream reads from the SSE events as they pass.

The relay itself (chunk by chunk, closed in every outcome, so vLLM sees a
client's disconnect and aborts the request instead of generating tokens nobody
reads) is :class:`gateway.exchange.Exchange`'s; this module only knows the
event format.

``UsageTap`` watches the SSE events as they pass. The gateway asks the engine
for ``stream_options: {include_usage, continuous_usage_stats}`` on every stream,
so every event carries the engine's running count of the tokens it generated
(per choice) and the last one carries the total. The tap keeps the latest
counts, so a stream that ends early (the client left, the engine broke) is
charged what the engine had generated up to the last event relayed, however
many tokens each event carried (vLLM's ``stream_interval`` batches many into
one). It removes what the client did not ask for: the per-event usage, and the
final usage chunk.

``ResponsesTap`` does the same for the Responses API's typed events
(``event: <type>``, ``data: {...}``): the response object they carry is
restated as the client asked for it, and the final one (its usage, the record
the gateway keeps) is held back until the relay has settled and stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Protocol

from gateway.errors import UpstreamError
from gateway.protocol import USAGE_MEMBER

_DONE = b"data: [DONE]\n\n"


def sse_error(exc: UpstreamError) -> bytes:
    """A terminal SSE event: the OpenAI SDK raises it as an APIError. No [DONE] follows,
    so no client mistakes a broken stream for a complete answer."""
    return b"data: " + json.dumps(exc.body()).encode() + b"\n\n"


def complete_events(buffered: bytes) -> tuple[bytes, bytes]:
    """The complete SSE events at the start of ``buffered`` (each ends with a blank
    line), and the partial one after them, kept until its end arrives."""
    end = buffered.rfind(b"\n\n")
    return (b"", buffered) if end < 0 else (buffered[: end + 2], buffered[end + 2 :])


_TOTAL = re.compile(rb'"total_tokens":(\d+)')
_INDEX = re.compile(rb'"index":(\d+)')


class EventSink(Protocol):
    """Takes every event's data as it is relayed (the cache's stream recorder)."""

    def add(self, data: bytes) -> None: ...
    def entry(self) -> dict[str, Any] | None: ...


class Tap(Protocol):
    """What the relay needs of a stream's events, whichever API's they are."""

    usage: dict[str, object] | None
    content_events: int
    error: UpstreamError | None

    def feed(self, chunk: bytes) -> bytes: ...
    def flush(self) -> bytes: ...
    def charge(self, prompt_estimate: int, reserved: int) -> int: ...
    def entry(self) -> dict[str, Any] | None: ...


class UsageTap:
    """Splits the byte stream into SSE events and inspects the ones that matter."""

    def __init__(
        self,
        strip_usage: bool,
        strip_running_usage: bool = True,
        recorder: EventSink | None = None,
    ) -> None:
        self._strip = strip_usage  # the final usage chunk
        self._strip_running = strip_running_usage  # the usage on every other event
        self.recorder = recorder  # set when the answer may be cached
        self._buffer = b""
        self.usage: dict[str, object] | None = None
        self.content_events = 0
        self._running: dict[int, int] = {}  # choice index -> its latest total_tokens
        self.error: UpstreamError | None = None  # set when the engine broke the stream

    def feed(self, chunk: bytes) -> bytes:
        """Return the complete events in ``chunk`` (plus what was buffered) to relay."""
        ready, self._buffer = complete_events(self._buffer + chunk)
        if not ready:
            return b""
        done = ready.endswith(_DONE)
        if done:
            # Held back until the relay has settled usage and stored the answer,
            # so a client that saw [DONE] sees its effects too.
            ready, self._buffer = ready[: -len(_DONE)], _DONE + self._buffer
        self.content_events += ready.count(b'"choices":[{')
        if self.recorder is not None:
            for event in ready.split(b"\n\n")[:-1]:
                self.recorder.add(event.removeprefix(b"data: "))
            if done:
                self.recorder.add(b"[DONE]")
        if b'"usage"' not in ready:
            return ready  # an engine that sends no usage: no parsing on the hot path
        return b"".join(self._inspect(event) for event in ready.split(b"\n\n")[:-1])

    def entry(self) -> dict[str, Any] | None:
        """The recorded answer, if it may be cached and is complete."""
        return self.recorder.entry() if self.recorder is not None else None

    def charge(self, prompt_estimate: int, reserved: int = 0) -> int:
        """Tokens to charge: the engine's final total; else (the stream ended early)
        the latest running totals, summed over choices; else, from an engine that
        sends no running usage, the prompt estimate plus one token per event."""
        total = None if self.usage is None else self.usage.get("total_tokens")
        if isinstance(total, int):
            return total
        if self._running:
            return sum(self._running.values())
        return prompt_estimate + self.content_events

    def flush(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest

    def _inspect(self, event: bytes) -> bytes:
        raw = event + b"\n\n"
        if b'"usage"' not in event or not event.startswith(b"data: {"):
            return raw
        if b'"choices":[]' not in event:
            # vLLM's compact JSON: a content event's running usage, found without parsing.
            field = USAGE_MEMBER.search(event)
            if field is not None:
                return self._running_usage(event, field)
        try:
            payload = json.loads(event[len(b"data: ") :])
        except ValueError:
            return raw
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if not isinstance(usage, dict) or not isinstance(usage.get("total_tokens"), int):
            return raw
        choices = payload.get("choices")
        if not choices:
            self.usage = usage  # the final usage chunk
            return b"" if self._strip else raw
        # Running usage from an engine that does not write compact JSON.
        index = choices[0].get("index", 0) if isinstance(choices[0], dict) else 0
        self._running[index if isinstance(index, int) else 0] = usage["total_tokens"]
        if not self._strip_running:
            return raw
        del payload["usage"]
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    def _running_usage(self, event: bytes, field: re.Match[bytes]) -> bytes:
        """A content event with the engine's running count: note it (per choice, as
        vLLM counts per choice) and, unless the client asked for it, remove it."""
        total = _TOTAL.search(field.group())
        index = _INDEX.search(event, 0, field.start())  # the choice's index comes first
        if total is not None:
            self._running[int(index.group(1)) if index else 0] = int(total.group(1))
        if not self._strip_running:
            return event + b"\n\n"
        return event[: field.start()] + event[field.end() :] + b"\n\n"


# The events whose data holds the whole response object (response.created, ...,
# response.completed): no other event has this member (in a delta's text its quotes
# would be escaped). And the events that end a response.
_RESPONSE_MEMBER = b'"response":{'
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesTap:
    """The Responses API's events. Charged the final usage's total; a stream that ends
    before it (the client left, the engine broke) is charged the whole reservation:
    vLLM sends no running usage here, and counting delta events under-counts (one
    event may carry many tokens)."""

    def __init__(self, restate: Callable[[dict[str, Any]], None]) -> None:
        self._restate = restate
        self._buffer = b""
        self._held = b""
        self.usage: dict[str, object] | None = None
        self.response: dict[str, Any] | None = None
        self.content_events = 0
        self.error: UpstreamError | None = None

    def feed(self, chunk: bytes) -> bytes:
        ready, self._buffer = complete_events(self._buffer + chunk)
        if not ready:
            return b""
        self.content_events += ready.count(b'.delta","')  # "type":"response.*.delta"
        if _RESPONSE_MEMBER not in ready:
            return ready  # deltas and item events pass as they came
        return b"".join(self._inspect(event) for event in ready.split(b"\n\n")[:-1])

    def _inspect(self, event: bytes) -> bytes:
        head, _, data = event.rpartition(b"\n")
        if not data.startswith(b"data: {") or _RESPONSE_MEMBER not in data:
            return event + b"\n\n"
        try:
            payload = json.loads(data[len(b"data: ") :])
        except ValueError:
            return event + b"\n\n"
        response = payload.get("response")
        if isinstance(response, dict):
            self._restate(response)
        data = b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        out = (head + b"\n" if head else b"") + data + b"\n\n"
        if payload.get("type") in _FINAL_EVENTS and isinstance(response, dict):
            usage = response.get("usage")
            self.usage = usage if isinstance(usage, dict) else None
            self.response = response
            self._held += out  # relayed by flush, after the relay settled and stored
            return b""
        return out

    def flush(self) -> bytes:
        rest, self._held, self._buffer = self._held + self._buffer, b"", b""
        return rest

    def charge(self, prompt_estimate: int, reserved: int) -> int:
        total = None if self.usage is None else self.usage.get("total_tokens")
        return total if isinstance(total, int) else max(reserved, prompt_estimate)

    def entry(self) -> dict[str, Any] | None:
        return None if self.response is None else {"response": self.response}
