"""The ``overhead`` scenario's load generator: closed and open loops, in its own process.

Speaks :mod:`bench.core.client`'s protocol. Each point: a fresh connection pool,
``warmup`` unmeasured requests, then ``requests`` measured ones. Closed loop (``rate``
0): ``concurrency`` workers, each sending its next request as soon as the previous
answer is fully read. Open loop (``rate`` > 0): requests start on a fixed schedule,
``rate`` per second, whatever the answers do; each latency is counted from the
request's scheduled start, so a generator or target falling behind shows up as latency
instead of silently lowering the rate (no coordinated omission).

Around the measured phase only, it reads the CPU time (user + system) of the target
and upstream processes and of itself, so CPU per request excludes warm-up and start-up.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from bench.core.client import Samples, closed_loop, cpu_s, emit, machine_cpu_s, progress, rss_mb
from bench.core.client import serve as serve_job

DONE = b"data: [DONE]\n\n"
HEADERS = {"authorization": "Bearer bench-key", "content-type": "application/json"}


class Bodies:
    """A distinct request body each time: ``temperature`` 0 makes answers cacheable, and
    the request number in the message makes every one a cache miss (looked up, not
    found, forwarded, stored), the costliest path through the gateway. Warm-up requests
    are numbered apart, so measured ones never hit their entries."""

    def __init__(self, point: dict[str, Any], warmup: bool) -> None:
        body = {
            "model": "bench-model",
            "messages": [{"role": "user", "content": "Say hello. #NUMBER"}],
            "max_tokens": 16,
            "temperature": 0,
            "stream": point["stream"],
        }
        self.head, self.tail = json.dumps(body).encode().split(b"NUMBER")
        self.prefix = ("warmup-" if warmup else "") + f"{point['index']}-{point['round']}-"
        self.count = 0

    def next(self) -> bytes:
        self.count += 1
        return b"".join((self.head, f"{self.prefix}{self.count}".encode(), self.tail))


class Timer:
    """Sends requests of one point and records their latencies (µs) in ``samples``."""

    def __init__(self, session: aiohttp.ClientSession, point: dict[str, Any]) -> None:
        self.session, self.url, self.stream = session, point["url"], point["stream"]
        self.samples = Samples()
        self.latencies_us: list[int] = []
        self.first_chunk_us: list[int] = []

    async def send(self, body: bytes, started: int | None = None) -> None:
        """One request, timed from ``started`` (perf_counter_ns) when given, else from now."""
        started = time.perf_counter_ns() if started is None else started
        first: int | None = None
        try:
            async with self.session.post(self.url, data=body, headers=HEADERS) as response:
                received = bytearray()
                if not self.stream:
                    received += await response.read()
                async for chunk in response.content.iter_any():
                    first = first or time.perf_counter_ns() - started
                    received += chunk
                elapsed = time.perf_counter_ns() - started
                ok = received.endswith(DONE) if self.stream else b'"choices"' in received
                if response.status != 200 or not ok:
                    self.samples.fail(f"status {response.status}: {bytes(received[:200])!r}")
                    return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.samples.fail(f"{type(exc).__name__}: {exc}")
            return
        self.latencies_us.append(elapsed // 1000)
        if self.stream and first is not None:
            self.first_chunk_us.append(first // 1000)

    async def closed(self, point: dict[str, Any], count: int, warmup: bool) -> None:
        bodies = Bodies(point, warmup)
        await closed_loop(point["concurrency"], count, lambda _: self.send(bodies.next()))

    async def open(self, point: dict[str, Any]) -> None:
        bodies, interval_ns = Bodies(point, False), int(1e9 / point["rate"])
        start = time.perf_counter_ns()
        tasks: list[asyncio.Task[None]] = []
        for i in range(point["requests"]):
            due = start + i * interval_ns
            delay = (due - time.perf_counter_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.send(bodies.next(), started=due)))
        await asyncio.gather(*tasks)


def _cpu(point: dict[str, Any]) -> dict[str, float]:
    return {
        "target_cpu_s": cpu_s(point["target_pid"], tree=True),
        "upstream_cpu_s": cpu_s(point["upstream_pid"], tree=True),
        "loadgen_cpu_s": time.process_time(),
        # Everything the machine ran meanwhile: the bench's own processes and anything
        # else on the box (that share is what the report calls background load).
        "machine_busy_cpu_s": machine_cpu_s(),
    }


async def measure(point: dict[str, Any]) -> dict[str, Any]:
    # Open loop: enough connections that the pool never holds a scheduled request back.
    pool = 512 if point["rate"] else point["concurrency"]
    connector = aiohttp.TCPConnector(limit=pool, limit_per_host=pool)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm = Timer(session, point)
        await warm.closed(point, max(point["warmup"], point["concurrency"]), warmup=True)
        timer = Timer(session, point)
        before, wall0 = _cpu(point), time.perf_counter()
        if point["rate"]:
            await timer.open(point)
        else:
            await timer.closed(point, point["requests"], warmup=False)
        wall_s = time.perf_counter() - wall0
        after = _cpu(point)
    return {
        "event": "point",
        **point,
        "wall_s": wall_s,
        **{name: after[name] - before[name] for name in after},
        "target_rss_mb": rss_mb(point["target_pid"]),
        "errors": timer.samples.errors,
        "error_sample": next(iter(timer.samples.error_samples), None),
        "latencies_us": timer.latencies_us,
        "first_chunk_us": timer.first_chunk_us,
    }


async def run(job: dict[str, Any]) -> None:
    for point in job["points"]:
        emit({"event": "start", **point})
        emit(await measure(point))
        progress(point["requests"])


if __name__ == "__main__":
    serve_job(run)
