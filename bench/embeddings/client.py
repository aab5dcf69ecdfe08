"""The ``embeddings`` scenario's client process (:mod:`bench.core.client`'s protocol).

Closed-loop ``/v1/embeddings`` requests (a batch of texts each, float vectors) at a
concurrency, one point per (round, concurrency, target): latency of every request and
the inputs embedded per second.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from bench.core.client import Samples, closed_loop, emit, progress
from bench.core.client import serve as serve_job

TIMEOUT = aiohttp.ClientTimeout(total=120)


def texts(n: int, batch: int) -> list[str]:
    """The ``n``-th request's inputs: unique (never a cache hit), sentence-length."""
    return [
        f"Request {n}, sentence {i}: a short note about item {n * batch + i}." for i in range(batch)
    ]


async def _embed(
    session: aiohttp.ClientSession, point: dict[str, Any], job: dict[str, Any], n: int
) -> tuple[int, str | None]:
    """One request: its latency in microseconds and an error, if any."""
    body = {"model": job["model"], "input": texts(n, job["batch"]), "encoding_format": "float"}
    started = time.perf_counter_ns()
    try:
        async with session.post(point["url"], data=json.dumps(body), headers=point["headers"]) as r:
            payload = await r.read()
            error = None if r.status == 200 else f"status {r.status}: {payload[:200]!r}"
            if error is None and len(json.loads(payload)["data"]) != job["batch"]:
                error = "wrong number of vectors"
            if r.headers.get("x-cache") not in (None, "bypass"):
                error = f"x-cache {r.headers['x-cache']!r}: the gateway's cache answered"
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return (time.perf_counter_ns() - started) // 1000, error


async def _point(job: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    samples, latencies_us = Samples(), list[int]()

    async def send(i: int) -> None:
        latency, error = await _embed(session, point, job, point["offset"] + i)
        latencies_us.append(latency)
        if error is not None:
            samples.fail(error)
        progress()

    connector = aiohttp.TCPConnector(limit=point["concurrency"])
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        started = time.perf_counter()
        await closed_loop(point["concurrency"], point["requests"], send)
        wall_s = time.perf_counter() - started
    return {"event": "point", **point, "wall_s": wall_s, "latencies_us": latencies_us,
            **samples.result()}  # fmt: skip


async def run(job: dict[str, Any]) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:  # warm-up, unmeasured
        for point in job["points"][:2]:

            async def warm(i: int, point: dict[str, Any] = point) -> None:
                await _embed(session, point, job, 10_000_000 + i)

            await closed_loop(4, 16, warm)
    for point in job["points"]:
        emit({"event": "start", **point})
        emit(await _point(job, point))


if __name__ == "__main__":
    serve_job(run)
