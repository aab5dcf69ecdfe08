"""Hit latency of a cached 200-token stream: the same streamed chat request sent once
(a miss, stored) and then ``--hits`` times (hits), through the real app with its
in-process cache (or Redis, ``--redis-url``), in front of a stand-in engine that
streams a vLLM-shaped answer (one token per event, usage on every event and a final
usage-only event, as the gateway asks of vLLM). Prints p50/p90/p99 of the hits,
client-side on loopback, and the gateway's own ``x-portico-overhead-ms`` p50.

    .venv/bin/python bench/cache_hit_latency.py [--hits 2000] [--tokens 200] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.settings import GatewaySettings

MODEL = "bench-model"
KEY = "bench-key"


def _engine(tokens: int) -> Starlette:
    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def chat(request: Request) -> Response:
        continuous = ((await request.json()).get("stream_options") or {}).get(
            "continuous_usage_stats"
        )
        head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1}

        def event(choice: dict[str, Any] | None, generated: int, final: bool = False) -> bytes:
            usage = {"prompt_tokens": 20, "total_tokens": 20 + generated}
            usage["completion_tokens"] = generated
            body: dict[str, Any] = {**head, "model": MODEL, "choices": [choice] if choice else []}
            if continuous or final:
                body["usage"] = usage
            return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

        async def stream() -> AsyncIterator[bytes]:
            yield event({"index": 0, "delta": {"role": "assistant", "content": ""}}, 0)
            for i in range(1, tokens + 1):
                finish = "length" if i == tokens else None
                choice = {"index": 0, "delta": {"content": " word"}, "finish_reason": finish}
                yield event({**choice, "logprobs": None}, i)
            yield event(None, tokens, final=True)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/health", lambda _: Response()),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


@contextmanager
def _serving(app: Any, port: int) -> Iterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--port", type=int, default=18931)
    parser.add_argument("--redis-url", help="cache in this Redis (a fresh prefix)")
    args = parser.parse_args()
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "temperature": 0,
        "max_tokens": args.tokens,
        "stream": True,
    }
    with _serving(_engine(args.tokens), args.port) as engine_url:
        settings = GatewaySettings(engine_url=engine_url, api_keys=[KEY])
        if args.redis_url:
            prefix = {"prefix": f"bench-hit-{uuid.uuid4().hex[:8]}"}
            settings = GatewaySettings(
                engine_url=engine_url, api_keys=[KEY], redis_url=args.redis_url, redis=prefix
            )
        with (
            _serving(create_app(settings), args.port + 1) as url,
            httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as client,
        ):
            first = client.post("/v1/chat/completions", json=request)
            assert first.headers["x-cache"] == "miss", first.headers
            times, overhead = [], []
            for _ in range(args.hits):
                started = time.perf_counter()
                hit = client.post("/v1/chat/completions", json=request)
                times.append((time.perf_counter() - started) * 1000)
                assert hit.headers["x-cache"] == "hit"
                overhead.append(float(hit.headers["x-portico-overhead-ms"]))
    cuts = statistics.quantiles(times, n=100)
    print(
        f"{args.hits} hits of a {args.tokens}-token stream ({len(hit.content)} bytes): "
        f"p50 {cuts[49]:.2f} ms, p90 {cuts[89]:.2f} ms, p99 {cuts[98]:.2f} ms; "
        f"gateway overhead p50 {statistics.median(overhead):.2f} ms"
    )


if __name__ == "__main__":
    main()
