"""Hit latency of a cached 200-token stream: the same streamed chat request sent once
(a miss, stored) and then ``--hits`` times (hits), through the real app with its
in-process cache (or Redis, ``--redis-url``), in front of a stand-in engine that
streams a vLLM-shaped answer (one token per event, usage on every event and a final
usage-only event, as the gateway asks of vLLM). Prints p50/p90/p99 of the hits,
client-side on loopback, and the gateway's own ``x-portico-overhead-ms`` p50.
``--encrypt`` runs it with an encryption key (docs/cache.md, encryption at rest).

``--micro`` instead times ``ResponseCache.store`` and ``lookup`` alone (in-process
store, no HTTP), with and without encryption, for that stream's entry and for a
small plain body: the median added cost of encryption per hit and per store, in µs.

    .venv/bin/python -m bench.cache.hit_latency [--hits 2000] [--tokens 200]
        [--redis-url URL] [--encrypt] [--micro]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
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
from gateway.cache import MemoryCacheStore, ResponseCache
from gateway.metrics import Metrics
from gateway.replay import StreamRecorder, entry_from_body
from gateway.sealing import Sealer
from gateway.settings import CacheSettings, GatewaySettings

MODEL = "bench-model"
KEY = "bench-key"


def _events(tokens: int, continuous: bool) -> list[bytes]:
    """The data of each event of a vLLM-shaped stream of ``tokens`` tokens."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1}

    def event(choice: dict[str, Any] | None, generated: int, final: bool = False) -> bytes:
        usage = {"prompt_tokens": 20, "total_tokens": 20 + generated}
        usage["completion_tokens"] = generated
        body: dict[str, Any] = {**head, "model": MODEL, "choices": [choice] if choice else []}
        if continuous or final:
            body["usage"] = usage
        return json.dumps(body, separators=(",", ":")).encode()

    found = [event({"index": 0, "delta": {"role": "assistant", "content": ""}}, 0)]
    for i in range(1, tokens + 1):
        finish = "length" if i == tokens else None
        choice = {"index": 0, "delta": {"content": " word"}, "finish_reason": finish}
        found.append(event({**choice, "logprobs": None}, i))
    return [*found, event(None, tokens, final=True), b"[DONE]"]


def _engine(tokens: int) -> Starlette:
    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def chat(request: Request) -> Response:
        continuous = ((await request.json()).get("stream_options") or {}).get(
            "continuous_usage_stats"
        )

        async def stream() -> AsyncIterator[bytes]:
            for data in _events(tokens, bool(continuous)):
                yield b"data: " + data + b"\n\n"

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


def _entries(tokens: int) -> dict[str, dict[str, Any] | None]:
    """The cache entries of a ``tokens``-token stream and of a small plain body."""
    recorder = StreamRecorder(1 << 22)
    for data in _events(tokens, continuous=True):
        recorder.add(data)
    message = {"role": "assistant", "content": "The capital of France is Paris."}
    body = {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
    }  # fmt: skip
    small = entry_from_body(json.dumps(body, separators=(",", ":")).encode())
    return {f"{tokens}-token stream": recorder.entry(), "small body": small}


async def _interleaved(caches: list[ResponseCache], entry: dict[str, Any], rounds: int) -> Any:
    """Per cache: (median store µs, median lookup-hit µs); the caches take turns each
    round, so load from elsewhere on the machine falls on both alike."""
    times: list[tuple[list[float], list[float]]] = [([], []) for _ in caches]
    for i in range(rounds):
        for cache, (stores, hits) in zip(caches, times, strict=True):
            key = f"bench-{i % 64}"
            started = time.perf_counter()
            await cache.store(key, entry, 60)
            stored = time.perf_counter()
            if await cache.lookup(key) is None:
                raise RuntimeError(f"{key} was stored but not found")
            hits.append((time.perf_counter() - stored) * 1e6)
            stores.append((stored - started) * 1e6)
    return [(statistics.median(s), statistics.median(h)) for s, h in times]


def _micro(tokens: int, rounds: int) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    for name, entry in _entries(tokens).items():
        if entry is None:
            raise RuntimeError(f"the gateway made no cache entry of the {name}")
        caches = [
            ResponseCache(MemoryCacheStore(1 << 26), CacheSettings(), Metrics(), sealer)
            for sealer in (None, Sealer.from_texts([key]))
        ]
        (plain_store, plain_hit), (sealed_store, sealed_hit) = asyncio.run(
            _interleaved(caches, entry, rounds)
        )
        print(
            f"{name}: store {plain_store:.1f} -> {sealed_store:.1f} µs "
            f"(+{sealed_store - plain_store:.1f}), hit {plain_hit:.1f} -> {sealed_hit:.1f} µs "
            f"(+{sealed_hit - plain_hit:.1f}); medians of {rounds}"
        )


def _expect(answer: httpx.Response, x_cache: str) -> None:
    if answer.headers.get("x-cache") != x_cache:
        raise RuntimeError(f"expected x-cache {x_cache}: {answer.headers}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--port", type=int, default=18931)
    parser.add_argument("--redis-url", help="cache in this Redis (a fresh prefix)")
    parser.add_argument("--encrypt", action="store_true", help="with an encryption key")
    parser.add_argument("--micro", action="store_true", help="time store/lookup alone")
    args = parser.parse_args()
    if args.micro:
        _micro(args.tokens, args.hits)
        return
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "temperature": 0,
        "max_tokens": args.tokens,
        "stream": True,
    }
    with _serving(_engine(args.tokens), args.port) as engine_url:
        options: dict[str, Any] = {"engine_url": engine_url, "api_keys": [KEY]}
        if args.encrypt:
            options["encryption_keys"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
        if args.redis_url:
            prefix = {"prefix": f"bench-hit-{uuid.uuid4().hex[:8]}"}
            options |= {"redis_url": args.redis_url, "redis": prefix}
        settings = GatewaySettings(**options)
        with (
            _serving(create_app(settings), args.port + 1) as url,
            httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as client,
        ):
            _expect(client.post("/v1/chat/completions", json=request), "miss")
            times, overhead = [], []
            for _ in range(args.hits):
                started = time.perf_counter()
                hit = client.post("/v1/chat/completions", json=request)
                times.append((time.perf_counter() - started) * 1000)
                _expect(hit, "hit")
                overhead.append(float(hit.headers["x-portico-overhead-ms"]))
    cuts = statistics.quantiles(times, n=100)
    print(
        f"{args.hits} hits of a {args.tokens}-token stream ({len(hit.content)} bytes): "
        f"p50 {cuts[49]:.2f} ms, p90 {cuts[89]:.2f} ms, p99 {cuts[98]:.2f} ms; "
        f"gateway overhead p50 {statistics.median(overhead):.2f} ms"
    )


if __name__ == "__main__":
    main()
