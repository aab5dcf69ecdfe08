"""One generation call, from the cache's verdict to its end, and the answer it gives.

A ``Call`` is the request as the service sees it (plain values, no HTTP). An
``Exchange`` owns everything a call holds while it runs: the cache ticket (the
duplicates waiting for this answer), the admission (tokens reserved against
the caller's limits) and the engine call (a slot on one engine and its open
answer). ``finish`` is the only way out, whatever happens: it frees the slot,
settles the admission to what the answer cost and stores the answer or tells
the waiting duplicates there is none. It runs once; every exit path calls it.

A ``Reply`` is what the service returns: a whole body, or the SSE bytes of a
stream plus the ``close`` its consumer awaits when it stops reading (at the end,
on a disconnect, on a failure). Only ``gateway.api`` turns it into HTTP; a batch
worker can consume the same object.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway import telemetry
from gateway.auth import Principal
from gateway.errors import EngineRejected, EngineTimeout, GatewayError, UpstreamError
from gateway.protocol import APIRequest, ChatCompletionRequest, EmbeddingRequest, ResponsesRequest
from gateway.quota import Admission
from gateway.replay import StreamRecorder
from gateway.routing import EngineCall
from gateway.streaming import ResponsesTap, Tap, UsageTap, sse_error

_log = logging.getLogger("portico.streaming")


@dataclass(frozen=True)
class Call:
    """One request for an engine, as the service sees it."""

    route: str
    body: bytes
    request: APIRequest
    principal: Principal
    request_id: str
    cache_control: str | None = None
    cache_mode: str | None = None
    session: str | None = None  # the session header's value: sticks the call to one engine
    # Responses API: the id the gateway gave the response, and the one it continues.
    response_id: str | None = None
    previous_response_id: str | None = None
    # Batch API work: engine slots only when no interactive request waits, the batch
    # tokens-per-minute window instead of rpm and tpm, vLLM's batch priority.
    batch: bool = False

    @property
    def chat(self) -> bool:
        return isinstance(self.request, ChatCompletionRequest)

    @property
    def id_prefix(self) -> str:
        """How the engine starts this route's answer ids (a replay renews them)."""
        if isinstance(self.request, EmbeddingRequest):
            return "embd-"
        return "chatcmpl-" if self.chat else "cmpl-"

    def restate(self, response: dict[str, Any]) -> None:
        """A Responses API answer as this call's client asked for it: the engine was
        sent ``store: false`` and no ``previous_response_id`` (the gateway keeps the
        responses), and the id the gateway chose (vLLM answers under it too; another
        engine might not)."""
        if not isinstance(self.request, ResponsesRequest):
            return
        response["id"] = self.response_id
        response["store"] = self.request.stored
        response["previous_response_id"] = self.previous_response_id

    @property
    def wants_usage(self) -> bool:
        options = self.request.stream_options
        return bool(options and options.include_usage)

    @property
    def wants_running_usage(self) -> bool:
        # vLLM's rule: running usage on every event only together with include_usage.
        options = self.request.stream_options
        return bool(options and options.include_usage and options.continuous_usage_stats)


class Keeper(Protocol):
    """What keeps a call's complete answer when it ends: the cache's ticket (which also
    hands it to the identical requests waiting), or the Responses API's store."""

    result: str  # x-cache: hit, miss or bypass

    def recorder(self) -> StreamRecorder | None:
        """Records a stream for keeping, as the relay's ``UsageTap`` sees it; None: not."""
        ...

    def relayed(self, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        """A whole answer: the body the client gets, and the entry to keep (None: none)."""
        ...

    async def finish(self, entry: dict[str, Any] | None = None) -> None: ...


@dataclass
class Reply:
    """The service's answer before HTTP. A stream's consumer must await ``close`` when
    it stops reading, however it stops."""

    status_code: int
    media_type: str
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    close: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)


def failure_charge(exc: BaseException, prompt: int) -> int:
    """What a request the engine did not answer is charged. Refused before any work
    (no engine, a full queue, a refused connection, the engine's own 4xx): nothing.
    A timeout or an engine 5xx after the engine accepted it: its prompt, which the
    engine did read. The client received no tokens, and holding its whole reservation
    would shrink its limit for a window over a failure that may be the engine's. A
    call cancelled on its way (the client left) is charged its prompt too: the engine
    may have read it."""
    if isinstance(exc, EngineTimeout):
        return prompt
    if isinstance(exc, EngineRejected):
        return prompt if exc.status_code >= 500 else 0
    return 0 if isinstance(exc, GatewayError) else prompt


class Exchange:
    def __init__(self, call: Call, ticket: Keeper, prompt: int) -> None:
        self.call = call
        self.ticket = ticket
        self.prompt = prompt  # the prompt's estimated tokens, what a failure may cost
        self.admission: Admission | None = None
        self.engine: EngineCall | None = None
        self._finished = False

    async def finish(
        self, tokens: int, entry: dict[str, Any] | None = None, suspect: bool = False
    ) -> None:
        """The one exit: free the engine slot (``suspect``: the engine may be at fault),
        settle the admission to ``tokens``, store ``entry`` (a complete answer) or hand
        the waiting duplicates nothing. Runs once; later calls return at once."""
        if self._finished:
            return
        self._finished = True
        try:
            if self.engine is not None:
                await self.engine.close(suspect=suspect)
            if self.admission is not None:
                await self.admission.settle(tokens)
        finally:
            await self.ticket.finish(entry)

    async def fail(self, exc: BaseException) -> None:
        """The call ended before the engine answered."""
        await self.finish(failure_charge(exc, self.prompt))

    def _headers(self) -> dict[str, str]:
        limits = self.admission.headers if self.admission is not None else {}
        return {**limits, "x-cache": self.ticket.result}

    async def read(self, engine: EngineCall) -> Reply:
        """A non-streamed answer, read whole; the call is finished when this returns."""
        self.engine = engine
        try:
            content = await engine.read()
        except BaseException as exc:
            # The client gets an error, not the answer: charged its prompt, as a broken
            # stream is charged what it relayed.
            await self.finish(self.prompt, suspect=isinstance(exc, GatewayError))
            raise
        usage = _usage(content)
        telemetry.current().add_usage(usage)
        total = usage.get("total_tokens") if usage else None
        stored = None
        if engine.status_code < 300:
            content, stored = self.ticket.relayed(content)
        await self.finish(total if isinstance(total, int) else self._reserved(), stored)
        media_type = engine.headers.get("content-type", "application/json")
        return Reply(engine.status_code, media_type, self._headers(), body=content)

    def _reserved(self) -> int:
        return self.admission.reserved if self.admission is not None else 0

    def _tap(self, recorder: StreamRecorder | None) -> Tap:
        call = self.call
        if isinstance(call.request, ResponsesRequest):
            return ResponsesTap(call.restate)
        return UsageTap(not call.wants_usage, not call.wants_running_usage, recorder)

    def relay(self, engine: EngineCall, recorder: StreamRecorder | None) -> Reply:
        """A streamed answer, relayed event by event. Finished before the answer's
        last event (``[DONE]``, a response's final event) on a normal end, so a client
        that saw it sees its effects; or by the consumer's ``close`` after a
        disconnect or a failure."""
        self.engine = engine
        tap = self._tap(recorder)

        async def end() -> None:
            telemetry.current().add_usage(tap.usage)
            charge = tap.charge(self.prompt, self._reserved())
            await self.finish(charge, tap.entry(), suspect=tap.error is not None)

        events = _relay(engine, tap, end)

        async def close() -> None:
            await events.aclose()  # a consumer that stopped early: the relay stops too
            await end()

        media_type = engine.headers.get("content-type", "text/event-stream")
        return Reply(engine.status_code, media_type, self._headers(), stream=events, close=close)


async def _relay(
    engine: EngineCall, tap: Tap, end: Callable[[], Awaitable[None]]
) -> AsyncGenerator[bytes, None]:
    record = telemetry.current()
    try:
        async for chunk in engine.chunks():
            out = tap.feed(chunk)
            if out:
                if record.first_token_at is None and tap.content_events:
                    record.first_token_at = time.perf_counter()
                yield out
        await end()
        rest = tap.flush()
        if rest:
            yield rest
    except UpstreamError as exc:
        _log.warning("stream broken by engine: %s", exc.message)
        engine.broke()
        tap.error = exc
        yield sse_error(exc)


def _usage(content: bytes) -> dict[str, Any] | None:
    try:
        usage = json.loads(content).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None
