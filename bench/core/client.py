"""The client processes' shared side: one job (JSON) on stdin, JSON lines on stdout.

Each scenario's client (``python -m bench.<scenario>.client``) is its own process, so
the load it generates and the CPU it spends are apart from the orchestrator's. It
writes ``{"event": "start", ...}`` when a measurement point begins, ``{"event":
"progress", "requests": n}`` after measured requests and ``{"event": "point", ...}``
with a point's raw results; :func:`bench.core.drive.drive` reads them. asyncio +
aiohttp on uvloop; every request is timed with ``perf_counter_ns``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import psutil


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def progress(requests: int = 1) -> None:
    emit({"event": "progress", "requests": requests})


def serve(runner: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Read the job on stdin and run ``runner`` on it (uvloop when present)."""
    job = json.load(sys.stdin)
    try:
        import uvloop
    except ImportError:  # the gateway depends on uvicorn[standard], so normally present
        asyncio.run(runner(job))  # type: ignore[arg-type]
    else:
        uvloop.run(runner(job))  # type: ignore[arg-type]


async def closed_loop(concurrency: int, count: int, send: Callable[[int], Awaitable[None]]) -> None:
    """``concurrency`` workers, each calling ``send(i)`` for the next ``i`` as soon as its
    previous call ended, until ``count`` calls were made."""
    counter = itertools.count()

    async def worker() -> None:
        while (i := next(counter)) < count:
            await send(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def cpu_s(pid: int, tree: bool = False) -> float:
    """User + system CPU seconds of a process (with ``tree``, and all its descendants:
    an engine's workers, a gateway's uvicorn workers). psutil: 10 ms ticks."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)] if tree else [root]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += float(times.user + times.system)
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants."""
    root = psutil.Process(pid)
    return float(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])) / 2**20


def machine_cpu_s() -> float:
    """System-wide busy CPU seconds (not idle, waiting or stolen), summed over all cores."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0) + getattr(times, "steal", 0.0)
    return float(sum(times) - idle)


@dataclass
class Reply:
    """One answer as the client saw it. Times in microseconds since the request was sent."""

    status: int = 0
    x_cache: str | None = None
    total_us: int = 0
    first_byte_us: int | None = None
    first_token_us: int | None = None
    completion_tokens: int | None = None
    text: str = ""
    error: str | None = None
    pieces: int = 0

    def row(self, text: bool = False) -> dict[str, Any]:
        found = asdict(self)
        if not text:
            del found["text"]
        return found


@dataclass
class Samples:
    replies: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(reason[:300])

    def result(self) -> dict[str, Any]:
        return {"errors": self.errors, "error_samples": self.error_samples, "replies": self.replies}

    def check(self, reply: Reply) -> None:
        """Keep a streamed reply (without its text); count it failed if it has no usage or
        came from the gateway's cache, which must stay out of every engine comparison."""
        self.replies.append(reply.row())
        if reply.error is not None:
            self.fail(reply.error)
        elif reply.x_cache not in (None, "bypass"):
            self.fail(f"x-cache {reply.x_cache!r}: the gateway's cache answered")
        elif not reply.completion_tokens:
            self.fail("no usage chunk with completion_tokens")


def _since(started: int) -> int:
    return (time.perf_counter_ns() - started) // 1000


async def call(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> Reply:
    """POST one chat completion, streamed or not, and read it to the end."""
    reply = Reply()
    started = time.perf_counter_ns()
    try:
        async with session.post(url, data=json.dumps(body).encode(), headers=headers) as response:
            reply.status = response.status
            reply.x_cache = response.headers.get("x-cache")
            if body.get("stream"):
                await _read_stream(response, started, reply)
            else:
                payload = await response.read()
                reply.total_us = reply.first_byte_us = reply.first_token_us = _since(started)
                if reply.status != 200:
                    reply.error = f"status {reply.status}: {payload[:200]!r}"
                else:
                    answer = json.loads(payload)
                    reply.text = answer["choices"][0]["message"]["content"] or ""
                    reply.completion_tokens = answer["usage"]["completion_tokens"]
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
        reply.total_us = _since(started)
        reply.error = f"{type(exc).__name__}: {exc}"
    return reply


async def _read_stream(response: aiohttp.ClientResponse, started: int, reply: Reply) -> None:
    done = False
    pieces: list[str] = []
    async for line in response.content:  # one SSE line at a time
        if reply.first_byte_us is None:
            reply.first_byte_us = _since(started)
        data = line[6:].strip() if line.startswith(b"data: ") else None
        if data is None or data == b"[DONE]":
            done = done or data is not None
            continue
        event = json.loads(data)
        if "error" in event:
            reply.error = f"error event: {data[:200]!r}"
        for choice in event.get("choices") or ():
            if content := (choice.get("delta") or {}).get("content"):
                if reply.first_token_us is None:
                    reply.first_token_us = _since(started)
                pieces.append(content)
        if event.get("usage"):
            reply.completion_tokens = event["usage"]["completion_tokens"]
    reply.total_us = _since(started)
    reply.text, reply.pieces = "".join(pieces), len(pieces)
    if reply.status != 200:
        reply.error = reply.error or f"status {reply.status}"
    elif not done:
        reply.error = reply.error or "stream ended without [DONE]"


def chat_body(
    model: str, messages: list[dict[str, Any]], max_tokens: int, **extra: Any
) -> dict[str, Any]:
    """A chat completion at ``temperature`` 0; streamed ones ask for the usage chunk."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    if extra.get("stream"):
        extra["stream_options"] = {"include_usage": True}
    return {**body, **extra}


def stack_cpu(
    engine_pids: list[int], gateway_pid: int, engines: str = "engine_cpu_s"
) -> dict[str, float]:
    """CPU seconds so far of the engines' process trees, the gateway, this process, and
    the whole machine (busy); a point's figures are the differences around it."""
    return {
        engines: sum(cpu_s(pid, tree=True) for pid in engine_pids),
        "gateway_cpu_s": cpu_s(gateway_pid),
        "loadgen_cpu_s": time.process_time(),
        "machine_busy_cpu_s": machine_cpu_s(),
    }


# A scenario's request: ``send(session, point, n, samples)`` sends request number ``n`` to
# the point's target and records it in ``samples`` (None: a warm-up request, not kept).
Send = Callable[[aiohttp.ClientSession, dict[str, Any], int, Samples | None], Awaitable[None]]
WARM_UP = 10_000_000  # warm-up requests are numbered from here, apart from measured ones


async def run_points(
    job: dict[str, Any],
    send: Send,
    warm: int,
    limits: aiohttp.ClientTimeout,
    cpu: Callable[[], dict[str, float]] = dict,
) -> None:
    """Warm up (``warm`` requests, 4 at a time, to each of the first two points' targets:
    direct and gateway), then run every point: a closed loop on a fresh pool, emitted with
    its wall time, how much each of ``cpu()``'s clocks grew meanwhile, and its samples."""
    async with aiohttp.ClientSession(timeout=limits) as session:
        for point in job["points"][:2]:
            await closed_loop(4, warm, functools.partial(_one, send, session, point, None, WARM_UP))
    for point in job["points"]:
        emit({"event": "start", **point})
        samples = Samples()
        connector = aiohttp.TCPConnector(limit=point["concurrency"])
        async with aiohttp.ClientSession(connector=connector, timeout=limits) as session:
            one = functools.partial(_one, send, session, point, samples, point["offset"])
            before, started = cpu(), time.perf_counter()
            await closed_loop(point["concurrency"], point["requests"], one)
            wall_s, after = time.perf_counter() - started, cpu()
        cpu_used = {name: after[name] - before[name] for name in after}
        emit({"event": "point", **point, "wall_s": wall_s, **cpu_used, **samples.result()})


async def _one(
    send: Send,
    session: aiohttp.ClientSession,
    point: dict[str, Any],
    samples: Samples | None,
    first: int,
    i: int,
) -> None:
    await send(session, point, first + i, samples)
    if samples is not None:
        progress()
