"""Talking to one vLLM engine over HTTP, and the boundary where client errors
become gateway errors.

One transport carries the requests: aiohttp, used directly. The generation
path is the gateway's hottest code, and httpx's request building, URL parsing
and cookie handling cost about a third of the gateway's CPU per request when
bench/ compared the two; the httpx transport was removed (JWKS fetches still
use httpx, where a request a minute costs nothing). It sits behind
:class:`Transport` (tests substitute their own) and gives back an
:class:`Answer`; every error it raises is translated here.

Every call has explicit time limits: the connect limit is given to the
client; time to first byte and the idle gap between body chunks are enforced
here with ``asyncio.timeout`` so they hold whatever the transport.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp

from gateway import telemetry
from gateway.errors import (
    EngineBusy,
    EngineRejected,
    EngineTimeout,
    EngineUnavailable,
    EngineUnreachable,
    GatewayError,
    UpstreamError,
)
from gateway.metrics import Metrics
from gateway.settings import UpstreamTimeouts

# The engine's error body is relayed to the client; cap what we read of it.
_MAX_ERROR_BODY = 64 * 1024


class Answer(Protocol):
    """An engine's answer whose headers have arrived; the body is read with ``raw``.
    The owner must ``aclose`` it: before the body's end that drops the connection,
    which is how vLLM learns to abort the request."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def raw(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class Transport(Protocol):
    """POST with a streamed answer, and short GETs; connection failures raise
    :class:`~gateway.errors.EngineUnreachable`, the rest raise the client's own errors."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer: ...
    async def get(self, url: str) -> tuple[int, bytes]: ...
    async def aclose(self) -> None: ...


class _AiohttpAnswer:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    def raw(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # the whole body was read: the connection is reusable
        else:
            self._response.close()  # mid-body: drop the connection, the engine aborts


class AiohttpTransport:
    def __init__(self, timeouts: UpstreamTimeouts) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0),
            # Reads are bounded by first_byte_s / stream_idle_s in Engine; no total cap.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect_s),
            cookie_jar=aiohttp.DummyCookieJar(),  # engines set no cookies; skip the jar
            auto_decompress=False,  # bytes are relayed as the engine sent them
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            response = await self._session.post(url, data=body, headers=headers)
        except aiohttp.ConnectionTimeoutError as exc:  # before TimeoutError: it is one
            raise EngineUnreachable(type(exc).__name__) from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            # Refused, reset, or a pooled keep-alive connection the engine dropped
            # (ServerDisconnectedError) before any answer.
            raise EngineUnreachable(type(exc).__name__) from exc
        return _AiohttpAnswer(response)

    async def get(self, url: str) -> tuple[int, bytes]:
        async with self._session.get(url) as response:
            return response.status, await response.read()

    async def aclose(self) -> None:
        await self._session.close()


def build_transport(timeouts: UpstreamTimeouts) -> Transport:
    """The pooled client the lifespan owns (and closes)."""
    return AiohttpTransport(timeouts)


# Errors a transport may raise mid-body: the engine's connection broke.
_BROKEN = (aiohttp.ClientError, OSError)


class Engine:
    """One engine's base URL plus the shared transport and time limits.

    Every wait on the engine is added to the request's telemetry record, so the
    gateway's own overhead is the rest."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        name: str,
        timeouts: UpstreamTimeouts,
        metrics: Metrics,
    ) -> None:
        self._transport = transport
        self.base_url = base_url.rstrip("/")
        self.name = name  # metric labels and the access log: never the address
        self._timeouts = timeouts
        self._metrics = metrics
        # Bound once: labels() costs a lock and a dict lookup per call.
        outcomes = metrics.upstream_requests
        self._ok, self._rejected, self._unavailable, self._timeout = (
            outcomes.labels(name, o) for o in ("ok", "rejected", "unavailable", "timeout")
        )

    async def get_json(self, path: str) -> Any:
        """A short GET (health, model list); any failure is EngineUnavailable."""
        up = self._metrics.engine_up.labels(self.name)
        try:
            async with asyncio.timeout(self._timeouts.probe_s):
                status, content = await self._transport.get(self.base_url + path)
        except (EngineUnreachable, TimeoutError, *_BROKEN) as exc:
            up.set(0)
            raise EngineUnavailable(f"Engine unreachable: {type(exc).__name__}.") from exc
        if status != 200:
            up.set(0)
            raise EngineUnavailable(f"Engine answered {path} with {status}.")
        up.set(1)
        try:
            return json.loads(content) if content else None
        except ValueError as exc:
            raise EngineUnavailable(f"Engine answered {path} with malformed JSON.") from exc

    async def open(
        self, path: str, body: bytes, headers: Mapping[str, str], stream: bool = True
    ) -> Answer:
        """POST and wait for the response headers; error statuses raise.

        vLLM sends a non-streamed answer's headers only when generation ends, so
        for ``stream=False`` the wait is bounded by ``generation_s``, not by
        ``first_byte_s``. The caller owns the returned answer and must ``aclose()`` it.
        """
        record = telemetry.current()
        record.engine = self.name
        started = time.perf_counter()
        limits = self._timeouts
        try:
            async with asyncio.timeout(limits.first_byte_s if stream else limits.generation_s):
                answer = await self._transport.post(self.base_url + path, body, headers)
        except EngineUnreachable as exc:
            self._unavailable.inc()
            raise EngineUnavailable(f"Engine unreachable: {exc.message}.") from exc
        except TimeoutError as exc:
            self._timeout.inc()
            raise EngineTimeout(
                "Engine did not start answering in time."
                if stream
                else "Engine did not finish the answer in time."
            ) from exc
        except _BROKEN as exc:
            self._unavailable.inc()
            raise EngineUnavailable(f"Engine unreachable: {type(exc).__name__}.") from exc
        finally:
            record.upstream_s += time.perf_counter() - started
        if answer.status_code >= 400:
            self._rejected.inc()
            try:
                raise await self._rejection(answer)
            finally:
                await answer.aclose()
        self._ok.inc()
        return answer

    def broke(self) -> None:
        """Count a stream this engine broke after its first byte."""
        self._metrics.streams_broken.labels(self.name).inc()

    async def read(self, answer: Answer) -> bytes:
        """The whole body of a non-streamed answer, within the idle limit per chunk."""
        return b"".join([chunk async for chunk in self.chunks(answer)])

    async def chunks(self, answer: Answer) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; a gap longer than stream_idle_s raises."""
        iterator = answer.raw().__aiter__()
        record = telemetry.current()
        while True:
            waited = time.perf_counter()
            try:
                async with asyncio.timeout(self._timeouts.stream_idle_s):
                    chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise EngineTimeout("Engine stalled mid-response.") from exc
            except _BROKEN as exc:
                raise EngineUnavailable(
                    f"Engine connection broke mid-response: {type(exc).__name__}."
                ) from exc
            finally:
                record.upstream_s += time.perf_counter() - waited
            yield chunk

    async def _rejection(self, answer: Answer) -> GatewayError:
        raw = b""
        try:
            async for chunk in self.chunks(answer):
                raw += chunk
                if len(raw) > _MAX_ERROR_BODY:
                    break
        except UpstreamError:
            pass  # the status alone still tells the client what happened
        if answer.status_code == 503:
            return EngineBusy("Engine is overloaded or not ready.", headers={"retry-after": "1"})
        message, error_type, param, code = _engine_error_fields(raw, answer.status_code)
        return EngineRejected(answer.status_code, message, error_type, param, code)


def _engine_error_fields(raw: bytes, status: int) -> tuple[str, str, str | None, Any]:
    """Pull OpenAI error fields out of vLLM's error body (or fall back to the status)."""
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    error = payload.get("error", payload) if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return (
            error["message"],
            # OpenAI's type for the status: vLLM names its Python exception class
            # ("BadRequestError"), which no OpenAI client matches on.
            "invalid_request_error" if status < 500 else "api_error",
            error.get("param") if isinstance(error.get("param"), str) else None,
            # vLLM puts the HTTP status in ``code`` (an int); OpenAI's codes are strings
            # naming the error, or null. The status is on the response already.
            code if isinstance(code, str) else None,
        )
    return (f"Engine answered with status {status}.", "api_error", None, None)
