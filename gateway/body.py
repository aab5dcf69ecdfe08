"""Request bodies: when the gateway reads one, how much of it, how fast, and how much of
all of them it holds at once.

No route reads a body before it has checked the caller. Routes declare no FastAPI
body parameter (FastAPI reads such a body in full before any dependency runs; a route
that did would still be capped below, but would read before its caller is checked):
they authenticate, then :func:`read_body`, then :func:`parse` against their model.

:class:`BodyLimits`, pure ASGI middleware, bounds every body on every route, routes
added later included, by wrapping ``receive``:

- one body: 413 past ``limits.max_body_bytes`` (from ``Content-Length`` at the first
  read, before any byte of it, else counted as it comes) and 408 unless all of it
  arrives within ``limits.body_read_s`` of the first read. A route may be given its own
  cap (``caps``, by method and path: the file upload's is the file size limit plus its
  multipart framing), so one large-bodied route does not loosen every other;
- all bodies: the bytes of the bodies requests in flight have read, or have declared
  and are reading, stay within ``limits.max_buffered_body_bytes`` per process (the
  chart's memory limit is then out of a client's reach); a body that would go over
  gets 503 with Retry-After. A request's bytes are given back when it ends, however
  it ends.

The refusal is raised from ``receive`` and is also what the client is answered,
whatever the route made of the exception (FastAPI turns any error while it reads a
body into its own 400). A response that starts before its request's body was read
closes the connection: uvicorn would otherwise read the rest only to discard it, and
a client trickling bytes could keep the connection open as long as it liked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import TypeVar

import pydantic_core
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import (
    BackendUnavailable,
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    render,
)
from gateway.metrics import Metrics
from gateway.settings import Limits

Model = TypeVar("Model", bound=BaseModel)

_CLOSE = {"connection": "close"}


async def read_body(request: Request) -> bytes:
    """The whole body of ``request``. Call it only once the caller is authenticated;
    :class:`BodyLimits` bounds its size and its read time (413, 408) and the bytes of
    all bodies held at once (503)."""
    try:
        return await request.body()
    except ClientDisconnect as exc:  # nobody reads this answer; a 400 keeps 500s for our faults
        raise InvalidRequest("The client left before sending the whole body.") from exc


def parse(model: type[Model], body: bytes) -> Model:
    """``body`` validated as ``model``. The first problem is a 400 naming its field, as
    the gateway renders FastAPI's own validation errors (gateway/app.py); a body that is
    not JSON (too deep a nesting, NaN and Infinity included) is a 400 ``invalid_json``.
    Validation is strict, so what is accepted is what the OpenAPI schema describes."""
    try:
        pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise InvalidRequest("Request body is not valid JSON.", code="invalid_json") from exc
    try:
        # Strict: a number is a number (not true, not "5"), as the published schema says.
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"Invalid request: {first['msg']}.", param=param) from exc


class BodyBudget:
    """The bytes of request bodies held in one process, never more than ``limit``;
    ``refused`` counts the bodies turned away. Only the event loop's thread touches
    it, so a plain count is exact."""

    def __init__(self, limit: int, refused: Counter) -> None:
        self.limit = limit
        self.held = 0
        self._refused = refused

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            self._refused.inc()
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class BodyLimits:
    """Bounds every HTTP request's body (size, read time, bytes held across requests);
    see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        limits: Limits,
        metrics: Metrics,
        caps: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.caps = dict(caps or {})  # (method, path) -> that route's own body cap
        refused = metrics.backpressure_rejections.labels("request_bodies")
        self.budget = BodyBudget(limits.max_buffered_body_bytes, refused)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.caps.get((scope["method"], scope["path"]), self.limits.max_body_bytes)
        body = _Body(scope, receive, send, self.limits, self.budget, cap)
        try:
            await self.app(scope, body.receive, body.send)
        finally:
            self.budget.give(body.taken)


class _Body:
    """One request's body as its route reads it: bytes so far, deadline, refusal."""

    __slots__ = ("_budget", "_cap", "_deadline", "_forward", "_limits", "_receive",
                 "_received", "_scope", "_send", "complete", "refusal", "taken")  # fmt: skip

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        limits: Limits,
        budget: BodyBudget,
        cap: int,
    ) -> None:
        self._cap = cap
        self._scope = scope
        self._receive = receive
        self._send = send
        self._limits = limits
        self._budget = budget
        self._deadline: float | None = None  # set by the first read
        self._received = 0
        self._forward: Send | None = None  # where messages go once the answer started
        self.complete = False
        self.refusal: GatewayError | None = None
        self.taken = 0  # bytes counted against the process's budget

    # receive and send are plain functions handing back the awaitable to await, not
    # coroutines: once the body is in, or the answer started, they add no coroutine of
    # their own to each message (a stream sends one message per chunk).

    def receive(self) -> Awaitable[Message]:
        if self.complete:  # after the body: Starlette waiting for the client to leave
            return self._receive()
        return self._read()

    def send(self, message: Message) -> Awaitable[None]:
        if self._forward is not None:
            return self._forward(message)
        return self._start_answer(message)

    async def _read(self) -> Message:
        if self.refusal is not None:
            raise self.refusal
        deadline = self._deadline if self._deadline is not None else self._start_reading()
        try:
            async with asyncio.timeout_at(deadline):
                message = await self._receive()
        except TimeoutError as exc:
            text = f"The request body did not arrive within {self._limits.body_read_s:g} s."
            raise self._refuse(RequestTimeout(text, headers=_CLOSE)) from exc
        if message["type"] == "http.request":
            self._count(len(message.get("body", b"")))
            self.complete = not message.get("more_body", False)
        return message

    async def _start_answer(self, message: Message) -> None:
        if self.refusal is not None:  # answer the refusal, whatever the route made of it
            self._forward = _drop
            response = render(self.refusal)
            start = {"status": response.status_code, "headers": response.raw_headers}
            await self._send({"type": "http.response.start", **start})
            await self._send({"type": "http.response.body", "body": response.body})
            return
        if not self.complete and _has_body(self._scope):
            headers = [*message.get("headers", ()), (b"connection", b"close")]
            message = {**message, "headers": headers}
        self._forward = self._send
        await self._send(message)

    def _start_reading(self) -> float:
        """At the first read: refuse a declared length over the cap, count it against
        the budget, and start the read-time clock; the deadline."""
        limits = self._limits
        declared = _content_length(self._scope)
        if declared is not None:
            if declared > self._cap:
                raise self._refuse(_too_large(self._cap))
            self._take(declared)
        self._deadline = asyncio.get_running_loop().time() + limits.body_read_s
        return self._deadline

    def _count(self, size: int) -> None:
        self._received += size
        cap = self._cap
        if self._received > cap:
            raise self._refuse(_too_large(cap))
        if self._received > self.taken:  # a chunked body: no length was declared
            self._take(self._received - self.taken)

    def _take(self, size: int) -> None:
        if not self._budget.take(size):
            raise self._refuse(
                BackendUnavailable(
                    "Too many request bodies are being received; retry shortly.",
                    code="request_bodies_full",
                    headers={"retry-after": "1", **_CLOSE},
                )
            )
        self.taken += size

    def _refuse(self, error: GatewayError) -> GatewayError:
        self.refusal = error
        return error


async def _drop(message: Message) -> None:
    """Where the route's own answer to a refused body goes."""


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than {limit} bytes.", headers=_CLOSE)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _has_body(scope: Scope) -> bool:
    return any(
        (name == b"content-length" and value != b"0") or name == b"transfer-encoding"
        for name, value in scope["headers"]
    )
