"""The load generator: a closed- and open-loop asyncio + aiohttp driver in its own process.

Reads a plan (JSON) on stdin and writes one JSON line per event on stdout:
``{"event": "start", ...}`` when a measurement point begins and
``{"event": "point", ...}`` with its raw results when it ends. Each point:
a fresh connection pool, ``warmup`` unmeasured requests, then ``requests``
measured ones. Closed loop (``rate`` 0): ``concurrency`` workers, each sending
its next request as soon as the previous answer is fully read. Open loop
(``rate`` > 0): requests start on a fixed schedule, ``rate`` per second,
whatever the answers do; each latency is counted from the request's scheduled
start, so a generator or target falling behind shows up as latency instead of
silently lowering the rate (no coordinated omission).

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
    rate: float = 0.0  # requests/s for an open loop; 0: closed loop


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


def _tree(process: psutil.Process) -> list[psutil.Process]:
    """The process and its children: a gateway with --workers N is a master and N workers."""
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [process]


def _cpu_s(process: psutil.Process) -> float:
    total = 0.0
    for proc in _tree(process):
        times = proc.cpu_times()
        total += float(times.user + times.system)
    return total


def _rss_mb(process: psutil.Process) -> float:
    return sum(proc.memory_info().rss for proc in _tree(process)) / 2**20


def _self_cpu_s() -> float:
    return time.process_time()


def _machine_cpu() -> tuple[float, float]:
    """System-wide (busy, stolen) CPU seconds, summed over all cores."""
    times = psutil.cpu_times()
    idle = float(times.idle + getattr(times, "iowait", 0.0))
    steal = float(getattr(times, "steal", 0.0))
    return float(sum(times)) - idle - steal, steal


async def _one(
    session: aiohttp.ClientSession,
    point: Point,
    body: bytes,
    headers: dict[str, str],
    started: int | None = None,
) -> tuple[int, int | None, str | None]:
    """One request: (total ns, first-chunk ns or None, error or None), counted from
    ``started`` (perf_counter_ns) when given, else from now."""
    started = time.perf_counter_ns() if started is None else started
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


HEADERS = {"authorization": "Bearer bench-key", "content-type": "application/json"}


class Bodies:
    """A distinct request body each time: ``temperature`` 0 makes answers cacheable, and
    the request number in the message makes every one a cache miss (looked up, not
    found, forwarded, stored), the costliest path through the gateway."""

    def __init__(self, point: Point) -> None:
        body = {
            "model": "bench-model",
            "messages": [{"role": "user", "content": "Say hello. #NUMBER"}],
            "max_tokens": 16,
            "temperature": 0,
            "stream": point.stream,
        }
        self._head, self._tail = json.dumps(body).encode().split(b"NUMBER")
        self._prefix = f"{point.index}-{point.round}-".encode()
        self._count = 0

    def next(self) -> bytes:
        self._count += 1
        return b"".join((self._head, self._prefix, str(self._count).encode(), self._tail))


class _WarmupBodies(Bodies):
    """Warm-up requests are numbered apart, so measured ones never hit their entries."""

    def __init__(self, point: Point) -> None:
        super().__init__(point)
        self._prefix = b"warmup-" + self._prefix


def _record(samples: Samples | None, elapsed: int, first: int | None, error: str | None) -> None:
    if samples is None:
        return
    if error is not None:
        samples.fail(error)
        return
    samples.latencies_us.append(elapsed // 1000)
    if first is not None:
        samples.first_chunk_us.append(first // 1000)


async def _closed_loop(
    session: aiohttp.ClientSession, point: Point, count: int, samples: Samples | None
) -> None:
    bodies = Bodies(point) if samples is not None else _WarmupBodies(point)
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            _record(samples, *await _one(session, point, bodies.next(), HEADERS))

    await asyncio.gather(*(worker() for _ in range(point.concurrency)))


async def _open_loop(session: aiohttp.ClientSession, point: Point, samples: Samples) -> None:
    bodies = Bodies(point)
    interval_ns = int(1e9 / point.rate)
    start = time.perf_counter_ns()
    tasks: list[asyncio.Task[None]] = []

    async def one(due: int, body: bytes) -> None:
        _record(samples, *await _one(session, point, body, HEADERS, started=due))

    for i in range(point.requests):
        due = start + i * interval_ns
        delay = (due - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, bodies.next())))
    await asyncio.gather(*tasks)


async def measure(point: Point) -> dict[str, Any]:
    target = psutil.Process(point.target_pid)
    upstream = psutil.Process(point.upstream_pid)
    # Open loop: enough connections that the pool never holds a scheduled request back.
    pool = 512 if point.rate else point.concurrency
    connector = aiohttp.TCPConnector(limit=pool, limit_per_host=pool)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await _closed_loop(session, point, max(point.warmup, point.concurrency), None)
        samples = Samples()
        target_cpu0, upstream_cpu0, self_cpu0 = _cpu_s(target), _cpu_s(upstream), _self_cpu_s()
        busy0, steal0 = _machine_cpu()
        wall0 = time.perf_counter()
        if point.rate:
            await _open_loop(session, point, samples)
        else:
            await _closed_loop(session, point, point.requests, samples)
        wall_s = time.perf_counter() - wall0
        target_cpu_s = _cpu_s(target) - target_cpu0
        upstream_cpu_s = _cpu_s(upstream) - upstream_cpu0
        loadgen_cpu_s = _self_cpu_s() - self_cpu0
        busy1, steal1 = _machine_cpu()
        rss_mb = _rss_mb(target)
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
