"""The load generator: a closed-loop asyncio + aiohttp driver in its own process.

Reads a plan (JSON) on stdin and writes one JSON line per event on stdout:
``{"event": "start", ...}`` when a measurement point begins and
``{"event": "point", ...}`` with its raw results when it ends. Each point:
a fresh connection pool of ``concurrency`` connections, ``warmup`` unmeasured
requests, then ``requests`` measured ones issued by ``concurrency`` workers,
each sending its next request as soon as the previous answer is fully read.

Around the measured phase only, it reads the CPU time (user + system) of the
target and upstream processes and of itself, so CPU per request excludes
warm-up and start-up.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

DONE = b"data: [DONE]\n\n"


@dataclass
class Point:
    """One measurement: a target at a concurrency, streamed or not."""

    index: int
    target: str
    url: str
    target_pid: int
    upstream_pid: int
    concurrency: int
    requests: int
    warmup: int
    stream: bool
    round: int


@dataclass
class Samples:
    latencies_us: list[int] = field(default_factory=list)
    first_chunk_us: list[int] = field(default_factory=list)
    errors: int = 0
    error_sample: str | None = None

    def fail(self, reason: str) -> None:
        self.errors += 1
        if self.error_sample is None:
            self.error_sample = reason[:300]


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _self_cpu_s() -> float:
    return time.process_time()


def _machine_cpu() -> tuple[float, float]:
    """System-wide (busy, stolen) CPU seconds, summed over all cores."""
    times = psutil.cpu_times()
    idle = float(times.idle + getattr(times, "iowait", 0.0))
    steal = float(getattr(times, "steal", 0.0))
    return float(sum(times)) - idle - steal, steal


async def _one(
    session: aiohttp.ClientSession, point: Point, body: bytes, headers: dict[str, str]
) -> tuple[int, int | None, str | None]:
    """One request: (total ns, first-chunk ns or None, error or None)."""
    started = time.perf_counter_ns()
    first: int | None = None
    try:
        async with session.post(point.url, data=body, headers=headers) as response:
            if point.stream:
                received = bytearray()
                async for chunk in response.content.iter_any():
                    if first is None:
                        first = time.perf_counter_ns() - started
                    received += chunk
                payload = bytes(received)
                ok = payload.endswith(DONE)
            else:
                payload = await response.read()
                ok = b'"choices"' in payload
            elapsed = time.perf_counter_ns() - started
            if response.status != 200 or not ok:
                return elapsed, first, f"status {response.status}: {payload[:200]!r}"
            return elapsed, first, None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return time.perf_counter_ns() - started, first, f"{type(exc).__name__}: {exc}"


async def _closed_loop(
    session: aiohttp.ClientSession, point: Point, count: int, samples: Samples | None
) -> None:
    body = json.dumps(
        {
            "model": "bench-model",
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 16,
            "stream": point.stream,
        }
    ).encode()
    headers = {"authorization": "Bearer bench-key", "content-type": "application/json"}
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            elapsed, first, error = await _one(session, point, body, headers)
            if samples is None:
                continue
            if error is not None:
                samples.fail(error)
                continue
            samples.latencies_us.append(elapsed // 1000)
            if first is not None:
                samples.first_chunk_us.append(first // 1000)

    await asyncio.gather(*(worker() for _ in range(point.concurrency)))


async def measure(point: Point) -> dict[str, Any]:
    target = psutil.Process(point.target_pid)
    upstream = psutil.Process(point.upstream_pid)
    connector = aiohttp.TCPConnector(limit=point.concurrency, limit_per_host=point.concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await _closed_loop(session, point, max(point.warmup, point.concurrency), None)
        samples = Samples()
        target_cpu0, upstream_cpu0, self_cpu0 = _cpu_s(target), _cpu_s(upstream), _self_cpu_s()
        busy0, steal0 = _machine_cpu()
        wall0 = time.perf_counter()
        await _closed_loop(session, point, point.requests, samples)
        wall_s = time.perf_counter() - wall0
        target_cpu_s = _cpu_s(target) - target_cpu0
        upstream_cpu_s = _cpu_s(upstream) - upstream_cpu0
        loadgen_cpu_s = _self_cpu_s() - self_cpu0
        busy1, steal1 = _machine_cpu()
        rss_mb = target.memory_info().rss / 2**20
    return {
        "event": "point",
        **point.__dict__,
        "wall_s": wall_s,
        "target_cpu_s": target_cpu_s,
        "upstream_cpu_s": upstream_cpu_s,
        "loadgen_cpu_s": loadgen_cpu_s,
        "target_rss_mb": rss_mb,
        # Everything the machine ran meanwhile: the bench's own processes and anything
        # else on the box (that share is what the report calls background load).
        "machine_busy_cpu_s": busy1 - busy0,
        "machine_steal_cpu_s": steal1 - steal0,
        "errors": samples.errors,
        "error_sample": samples.error_sample,
        "latencies_us": samples.latencies_us,
        "first_chunk_us": samples.first_chunk_us,
    }


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def run(points: list[Point]) -> None:
    for point in points:
        _emit({"event": "start", **point.__dict__})
        _emit(await measure(point))


def main() -> None:
    plan = json.load(sys.stdin)
    points = [Point(**raw) for raw in plan["points"]]
    try:
        import uvloop
    except ImportError:  # the gateway depends on uvicorn[standard], so normally present
        asyncio.run(run(points))
    else:
        uvloop.run(run(points))


if __name__ == "__main__":
    main()
