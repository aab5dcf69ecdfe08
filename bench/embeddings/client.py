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

from bench.core.client import Samples, run_points, serve

TIMEOUT = aiohttp.ClientTimeout(total=120)


def texts(n: int, batch: int) -> list[str]:
    """The ``n``-th request's inputs: unique (never a cache hit), sentence-length."""
    return [
        f"Request {n}, sentence {i}: a short note about item {n * batch + i}." for i in range(batch)
    ]


async def run(job: dict[str, Any]) -> None:
    async def send(
        session: aiohttp.ClientSession, point: dict[str, Any], n: int, samples: Samples | None
    ) -> None:
        body = {"model": job["model"], "input": texts(n, job["batch"]), "encoding_format": "float"}
        started, error = time.perf_counter_ns(), None
        try:
            async with session.post(
                point["url"], data=json.dumps(body), headers=point["headers"]
            ) as r:
                payload = await r.read()
                error = None if r.status == 200 else f"status {r.status}: {payload[:200]!r}"
                if error is None and len(json.loads(payload)["data"]) != job["batch"]:
                    error = "wrong number of vectors"
                if r.headers.get("x-cache") not in (None, "bypass"):
                    error = f"x-cache {r.headers['x-cache']!r}: the gateway's cache answered"
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        if samples is not None:
            samples.replies.append({"total_us": (time.perf_counter_ns() - started) // 1000})
            if error is not None:
                samples.fail(error)

    await run_points(job, send, 16, TIMEOUT)


if __name__ == "__main__":
    serve(run)
