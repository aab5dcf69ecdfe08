"""Relaying an engine's response body to the client chunk by chunk.

The upstream response is closed in every outcome: normal end, engine failure,
and client disconnect (Starlette cancels the body task; ``RelayResponse``
closes the upstream after that, so vLLM sees the connection drop and aborts
the request instead of generating tokens nobody reads).

``UsageTap`` watches the SSE events as they pass: it picks up the engine's
``usage`` chunk (which the gateway asks for on every stream, to charge it),
drops that chunk when the client did not ask for it, and counts the content
events so an aborted stream can still be charged for what it received.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway import telemetry
from gateway.errors import UpstreamError
from gateway.replay import StreamAssembler
from gateway.upstream import Answer, Engine

_log = logging.getLogger("portico.streaming")
_DONE = b"data: [DONE]\n\n"


def sse_error(exc: UpstreamError) -> bytes:
    """A terminal SSE event: the OpenAI SDK raises it as an APIError. No [DONE] follows,
    so no client mistakes a broken stream for a complete answer."""
    return b"data: " + json.dumps(exc.body()).encode() + b"\n\n"


class UsageTap:
    """Splits the byte stream into SSE events and inspects the ones that matter."""

    def __init__(self, strip_usage: bool, recorder: StreamAssembler | None = None) -> None:
        self._strip = strip_usage
        self.recorder = recorder  # set when the answer may be cached
        self._buffer = b""
        self.usage: dict[str, object] | None = None
        self.content_events = 0
        self.error: UpstreamError | None = None  # set when the engine broke the stream

    def feed(self, chunk: bytes) -> bytes:
        """Return the complete events in ``chunk`` (plus what was buffered) to relay."""
        self._buffer += chunk
        end = self._buffer.rfind(b"\n\n")
        if end < 0:
            return b""
        ready, self._buffer = self._buffer[: end + 2], self._buffer[end + 2 :]
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
            return ready  # the common case: no JSON parsing on the hot path
        return b"".join(self._inspect(event) for event in ready.split(b"\n\n")[:-1])

    def total_tokens(self) -> int | None:
        """The engine's count from the usage chunk, if the stream got that far."""
        total = None if self.usage is None else self.usage.get("total_tokens")
        return total if isinstance(total, int) else None

    def flush(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest

    def _inspect(self, event: bytes) -> bytes:
        raw = event + b"\n\n"
        if b'"usage"' not in event or not event.startswith(b"data: {"):
            return raw
        try:
            payload = json.loads(event[len(b"data: ") :])
        except ValueError:
            return raw
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
            self.usage = usage
            if self._strip and not payload.get("choices"):
                return b""
        return raw


async def _relay(
    engine: Engine,
    upstream: Answer,
    tap: UsageTap,
    on_end: Callable[[UsageTap], Awaitable[None]],
) -> AsyncIterator[bytes]:
    record = telemetry.current()
    try:
        async for chunk in engine.chunks(upstream):
            out = tap.feed(chunk)
            if out:
                if record.first_token_at is None and tap.content_events:
                    record.first_token_at = time.perf_counter()
                yield out
        await on_end(tap)
        rest = tap.flush()
        if rest:
            yield rest
    except UpstreamError as exc:
        _log.warning("stream broken by engine: %s", exc.message)
        engine.broke()
        tap.error = exc
        yield sse_error(exc)
    finally:
        await upstream.aclose()


class RelayResponse(StreamingResponse):
    """A streamed engine response that always closes its upstream and reports what
    passed through to ``on_end`` (usage settlement, caching): before the final
    ``[DONE]`` on a normal end, after the disconnect or failure otherwise.
    ``on_end`` must tolerate being called twice."""

    def __init__(
        self,
        engine: Engine,
        upstream: Answer,
        media_type: str,
        tap: UsageTap,
        on_end: Callable[[UsageTap], Awaitable[None]],
        headers: dict[str, str],
    ) -> None:
        super().__init__(_relay(engine, upstream, tap, on_end), status_code=upstream.status_code)
        self.media_type = media_type
        self.init_headers({**headers, "content-type": media_type, "cache-control": "no-cache"})
        self._upstream = upstream
        self._tap = tap
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._upstream.aclose()
            await self._on_end(self._tap)
