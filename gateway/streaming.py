"""Relaying an engine's response body to the client chunk by chunk.

The upstream response is closed in every outcome: normal end, engine failure,
and client disconnect (Starlette cancels the body task; ``RelayResponse``
closes the upstream after that, so vLLM sees the connection drop and aborts
the request instead of generating tokens nobody reads).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.errors import UpstreamError
from gateway.upstream import Engine

_log = logging.getLogger("portico.streaming")


def sse_error(exc: UpstreamError) -> bytes:
    """A terminal SSE event: the OpenAI SDK raises it as an APIError. No [DONE] follows,
    so no client mistakes a broken stream for a complete answer."""
    return b"data: " + json.dumps(exc.body()).encode() + b"\n\n"


async def _relay(engine: Engine, upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in engine.chunks(upstream):
            yield chunk
    except UpstreamError as exc:
        _log.warning("stream broken by engine: %s", exc.message)
        yield sse_error(exc)
    finally:
        await upstream.aclose()


class RelayResponse(StreamingResponse):
    """A streamed engine response that always closes its upstream."""

    def __init__(self, engine: Engine, upstream: httpx.Response, media_type: str) -> None:
        super().__init__(_relay(engine, upstream), status_code=upstream.status_code)
        self.media_type = media_type
        self.init_headers({"content-type": media_type, "cache-control": "no-cache"})
        self._upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._upstream.aclose()
