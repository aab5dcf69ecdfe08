"""Talking to one vLLM engine over HTTP, and the boundary where httpx errors
become gateway errors.

Every call has explicit time limits: connect and probe limits are given to
httpx; time to first byte and the idle gap between body chunks are enforced
here with ``asyncio.timeout`` so they hold whatever transport httpx uses.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from gateway import telemetry
from gateway.errors import (
    EngineBusy,
    EngineRejected,
    EngineTimeout,
    EngineUnavailable,
    GatewayError,
    UpstreamError,
)
from gateway.metrics import Metrics
from gateway.settings import UpstreamTimeouts

# The engine's error body is relayed to the client; cap what we read of it.
_MAX_ERROR_BODY = 64 * 1024


def build_client(timeouts: UpstreamTimeouts, transport: str) -> httpx.AsyncClient:
    """The pooled client the lifespan owns.

    ``transport="aiohttp"`` (the default) runs httpx's API over aiohttp's
    connection pool: the whole gateway then spends 1.4-2.3x less CPU per proxied
    request than with httpx's own transport (bench/, docs/architecture.md).
    """
    timeout = httpx.Timeout(
        connect=timeouts.connect_s,
        # Reads are bounded by first_byte_s / stream_idle_s below; this is a backstop.
        read=max(timeouts.first_byte_s, timeouts.stream_idle_s) + 5,
        write=timeouts.connect_s,
        pool=timeouts.first_byte_s,
    )
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    if transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return httpx.AsyncClient(transport=AiohttpTransport(), timeout=timeout, limits=limits)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


class Engine:
    """One engine's base URL plus the shared client and time limits.

    Every wait on the engine is added to the request's telemetry record, so the
    gateway's own overhead is the rest."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        timeouts: UpstreamTimeouts,
        metrics: Metrics,
    ) -> None:
        self._client = client
        self.base_url = base_url.rstrip("/")
        self._timeouts = timeouts
        self._metrics = metrics

    async def get_json(self, path: str) -> Any:
        """A short GET (health, model list); any failure is EngineUnavailable."""
        up = self._metrics.engine_up.labels(self.base_url)
        try:
            async with asyncio.timeout(self._timeouts.probe_s):
                response = await self._client.get(self.base_url + path)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            up.set(0)
            raise EngineUnavailable(f"Engine unreachable: {type(exc).__name__}.") from exc
        if response.status_code != 200:
            up.set(0)
            raise EngineUnavailable(f"Engine answered {path} with {response.status_code}.")
        up.set(1)
        return response.json() if response.content else None

    async def open(self, path: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST and wait for the response headers; error statuses raise.

        The caller owns the returned response and must ``aclose()`` it.
        """
        request = self._client.build_request(
            "POST", self.base_url + path, content=body, headers=headers
        )
        record = telemetry.current()
        record.engine = self.base_url
        outcomes = self._metrics.upstream_requests
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeouts.first_byte_s):
                response = await self._client.send(request, stream=True)
        except httpx.ConnectTimeout as exc:
            # Checked before other timeouts: the aiohttp transport reports a
            # connection the engine dropped (a killed engine's pooled keep-alive
            # connection) as ConnectTimeout, and that is a dead engine, not a slow one.
            outcomes.labels(self.base_url, "unavailable").inc()
            raise EngineUnavailable(f"Engine unreachable: {type(exc).__name__}.") from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            outcomes.labels(self.base_url, "timeout").inc()
            raise EngineTimeout("Engine did not start answering in time.") from exc
        except (httpx.HTTPError, OSError) as exc:
            outcomes.labels(self.base_url, "unavailable").inc()
            raise EngineUnavailable(f"Engine unreachable: {type(exc).__name__}.") from exc
        finally:
            record.upstream_s += time.perf_counter() - started
        if response.status_code >= 400:
            outcomes.labels(self.base_url, "rejected").inc()
            try:
                raise await self._rejection(response)
            finally:
                await response.aclose()
        outcomes.labels(self.base_url, "ok").inc()
        return response

    async def read(self, response: httpx.Response) -> bytes:
        """The whole body of a non-streamed answer, within the idle limit per chunk."""
        return b"".join([chunk async for chunk in self.chunks(response)])

    async def chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; a gap longer than stream_idle_s raises."""
        iterator = response.aiter_raw().__aiter__()
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
            except (httpx.HTTPError, OSError) as exc:
                raise EngineUnavailable(
                    f"Engine connection broke mid-response: {type(exc).__name__}."
                ) from exc
            finally:
                record.upstream_s += time.perf_counter() - waited
            yield chunk

    async def _rejection(self, response: httpx.Response) -> GatewayError:
        raw = b""
        try:
            async for chunk in self.chunks(response):
                raw += chunk
                if len(raw) > _MAX_ERROR_BODY:
                    break
        except UpstreamError:
            pass  # the status alone still tells the client what happened
        if response.status_code == 503:
            return EngineBusy("Engine is overloaded or not ready.", headers={"retry-after": "1"})
        message, error_type, param, code = _engine_error_fields(raw, response.status_code)
        return EngineRejected(response.status_code, message, error_type, param, code)


def _engine_error_fields(raw: bytes, status: int) -> tuple[str, str, str | None, Any]:
    """Pull OpenAI error fields out of vLLM's error body (or fall back to the status)."""
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    error = payload.get("error", payload) if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        default_type = "invalid_request_error" if status < 500 else "api_error"
        return (
            error["message"],
            str(error.get("type") or default_type),
            error.get("param") if isinstance(error.get("param"), str) else None,
            error.get("code"),
        )
    return (f"Engine answered with status {status}.", "api_error", None, None)
