"""The client of the real-engine scenarios, in its own process (like ``load.py``).

Reads one job (JSON) on stdin and writes JSON lines on stdout:
``{"event": "start", ...}`` when a measurement point begins, ``{"event":
"progress", "requests": n}`` after measured requests, ``{"event": "point",
...}`` with a point's raw results. asyncio + aiohttp on uvloop; every request
is timed with ``perf_counter_ns`` from sending to the last body byte.

- ``{"scenario": "cache", ...}``: sequential requests through the gateway; each
  prompt once (a miss: the engine answers) and again (hits, ``hit_repeats``
  times each; non-streamed prompts and streamed ones, each shape its own
  entry), checking the
  ``x-cache`` header and that a hit returns the miss's text. Reads the
  gateway's ``/metrics`` after the warm-up and at the end.
- ``{"scenario": "engine", ...}``: closed-loop streamed chat completions at a
  concurrency, one point per (round, concurrency, target); time to the first
  token, completion tokens from the usage chunk, CPU of the engine's process
  tree, the gateway and this process around the measured phase.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import psutil

TOPICS = (
    "a lighthouse keeper",
    "a city built on stilts",
    "a clockmaker's apprentice",
    "a desert caravan",
    "a forgotten library",
    "a mountain observatory",
    "a river ferry",
    "a winter market",
    "a robot gardener",
    "an island post office",
    "a night train",
    "a beekeeper",
    "a cartographer",
    "a travelling circus",
    "a deep-sea station",
    "a village bakery",
)


def engine_prompt(n: int) -> str:
    """The ``n``-th prompt of the engine scenario: unique per request, similar length."""
    topic = TOPICS[n % len(TOPICS)]
    return f"Request {n}. Write a long, detailed story about {topic}, with many characters."


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


@dataclass
class Samples:
    replies: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(reason[:300])


def _since(started: int) -> int:
    return (time.perf_counter_ns() - started) // 1000


async def call(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> Reply:
    """POST one chat completion, streamed or not, and read it to the end."""
    reply = Reply()
    data = json.dumps(body).encode()
    started = time.perf_counter_ns()
    try:
        async with session.post(url, data=data, headers=headers) as response:
            reply.status = response.status
            reply.x_cache = response.headers.get("x-cache")
            if body.get("stream"):
                await _read_stream(response, started, reply)
            else:
                payload = await response.read()
                reply.total_us = reply.first_byte_us = _since(started)
                _parse_body(payload, reply)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
        reply.total_us = _since(started)
        reply.error = f"{type(exc).__name__}: {exc}"
    return reply


def _parse_body(payload: bytes, reply: Reply) -> None:
    if reply.status != 200:
        reply.error = f"status {reply.status}: {payload[:200]!r}"
        return
    answer = json.loads(payload)
    reply.text = answer["choices"][0]["message"]["content"] or ""
    reply.completion_tokens = answer["usage"]["completion_tokens"]
    reply.first_token_us = reply.total_us


async def _read_stream(response: aiohttp.ClientResponse, started: int, reply: Reply) -> None:
    done = False
    pieces: list[str] = []
    async for line in response.content:  # one SSE line at a time
        if reply.first_byte_us is None:
            reply.first_byte_us = _since(started)
        if not line.startswith(b"data: "):
            continue
        data = line[6:].strip()
        if data == b"[DONE]":
            done = True
            continue
        event = json.loads(data)
        if "error" in event:
            reply.error = f"error event: {data[:200]!r}"
        for choice in event.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                if reply.first_token_us is None:
                    reply.first_token_us = _since(started)
                pieces.append(content)
        if event.get("usage"):
            reply.completion_tokens = event["usage"]["completion_tokens"]
    reply.total_us = _since(started)
    reply.text = "".join(pieces)
    reply.pieces = len(pieces)
    if reply.status != 200:
        reply.error = reply.error or f"status {reply.status}"
    elif not done:
        reply.error = reply.error or "stream ended without [DONE]"


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _progress(requests: int = 1) -> None:
    _emit({"event": "progress", "requests": requests})


# --- CPU accounting (psutil: /proc/<pid>/stat, 10 ms ticks) -------------------------


def _cpu_s(pid: int, tree: bool = False) -> float:
    """User + system CPU seconds of a process (and, with ``tree``, all its descendants)."""
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
        total += times.user + times.system
    return total


def _machine_busy_s() -> float:
    """System-wide busy CPU seconds, summed over all cores (idle, iowait, steal excluded)."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0) + getattr(times, "steal", 0.0)
    return float(sum(times)) - idle


@dataclass
class CpuClock:
    engine_pid: int
    gateway_pid: int
    start: dict[str, float] = field(default_factory=dict)

    def _read(self) -> dict[str, float]:
        return {
            "engine_cpu_s": _cpu_s(self.engine_pid, tree=True),
            "gateway_cpu_s": _cpu_s(self.gateway_pid),
            "loadgen_cpu_s": time.process_time(),
            "machine_busy_cpu_s": _machine_busy_s(),
        }

    def begin(self) -> None:
        self.start = self._read()

    def end(self) -> dict[str, float]:
        now = self._read()
        return {name: now[name] - self.start[name] for name in now}


# --- cache scenario -----------------------------------------------------------------


async def _metrics_text(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        return await response.text()


async def run_cache(job: dict[str, Any]) -> None:
    url, model, max_tokens = job["url"], job["model"], job["max_tokens"]
    headers = {"authorization": f"Bearer {job['api_key']}", "content-type": "application/json"}
    bypass = {**headers, "x-portico-cache": "off"}
    samples = Samples()

    def body(prompt: str, stream: bool) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": stream,
        }
        if stream:
            request["stream_options"] = {"include_usage": True}
        return request

    def record(kind: str, index: int, reply: Reply, expect: str, text: str | None) -> None:
        row = {"kind": kind, "prompt": index, **asdict(reply)}
        row["text_matches"] = text is None or reply.text == text
        samples.replies.append(row)
        if reply.error is not None:
            samples.fail(f"{kind} #{index}: {reply.error}")
        elif reply.x_cache != expect:
            samples.fail(f"{kind} #{index}: x-cache {reply.x_cache!r}, expected {expect!r}")
        elif not row["text_matches"]:
            samples.fail(f"{kind} #{index}: text differs from the miss: {reply.text[:100]!r}")
        _progress()

    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Warm-up (unmeasured): the engine, the gateway's upstream pool, one store and hit.
        for i, prompt in enumerate(job["warmup_prompts"]):
            await call(session, url, body(prompt, stream=i % 2 == 1), bypass)
        for stream in (False, True, False):
            await call(session, url, body(job["warmup_prompts"][0], stream), headers)
        metrics_before = await _metrics_text(session, job["metrics_url"])
        clock = CpuClock(job["engine_pid"], job["gateway_pid"])
        clock.begin()
        started = time.perf_counter()
        for i, prompt in enumerate(job["prompts"]):
            _emit({"event": "start", "label": f"non-stream prompt {i + 1}"})
            miss = await call(session, url, body(prompt, stream=False), headers)
            record("miss", i, miss, "miss", None)
            for _ in range(job["hit_repeats"]):
                hit = await call(session, url, body(prompt, stream=False), headers)
                record("hit", i, hit, "hit", miss.text)
        for i, prompt in enumerate(job["stream_prompts"]):
            _emit({"event": "start", "label": f"stream prompt {i + 1}"})
            miss = await call(session, url, body(prompt, stream=True), headers)
            record("stream-miss", i, miss, "miss", None)
            for _ in range(job["hit_repeats"]):
                hit = await call(session, url, body(prompt, stream=True), headers)
                record("stream-hit", i, hit, "hit", miss.text)
        wall_s = time.perf_counter() - started
        cpu = clock.end()
        metrics_after = await _metrics_text(session, job["metrics_url"])
    _emit(
        {
            "event": "point",
            "wall_s": wall_s,
            **cpu,
            "errors": samples.errors,
            "error_samples": samples.error_samples,
            "replies": samples.replies,
            "metrics_before": metrics_before,
            "metrics_after": metrics_after,
        }
    )


# --- engine scenario ----------------------------------------------------------------


async def _closed_loop(
    session: aiohttp.ClientSession,
    concurrency: int,
    count: int,
    make: Callable[[int], tuple[str, dict[str, Any], dict[str, str]]],
    on_reply: Callable[[Reply], None] | None,
) -> None:
    """``concurrency`` workers, each sending its next request when the previous one ended."""
    counter = itertools.count()

    async def worker() -> None:
        while (i := next(counter)) < count:
            url, body, headers = make(i)
            reply = await call(session, url, body, headers)
            if on_reply is not None:
                on_reply(reply)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _stream_body(model: str, prompt: str, max_tokens: int, ignore_eos: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM: always generate max_tokens (as vLLM's own benchmarks)
    return body


async def run_engine(job: dict[str, Any]) -> None:
    model, max_tokens, ignore_eos = job["model"], job["max_tokens"], job["ignore_eos"]
    clock = CpuClock(job["engine_pid"], job["gateway_pid"])
    timeout = aiohttp.ClientTimeout(total=600)

    # Warm-up (unmeasured): a few short requests per target, some concurrent.
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for target in job["warmup"]:

            def warm(i: int, target: dict[str, Any] = target) -> Any:
                prompt = engine_prompt(10_000_000 + i)
                return target["url"], _stream_body(model, prompt, 8, ignore_eos), target["headers"]

            await _closed_loop(session, 4, 8, warm, None)

    for point in job["points"]:
        _emit({"event": "start", **point})
        samples = Samples()

        def make(i: int, point: dict[str, Any] = point) -> Any:
            prompt = engine_prompt(point["prompt_offset"] + i)
            body = _stream_body(model, prompt, max_tokens, ignore_eos)
            return point["url"], body, point["headers"]

        def on_reply(reply: Reply, samples: Samples = samples) -> None:
            row = asdict(reply)
            del row["text"]
            samples.replies.append(row)
            if reply.error is not None:
                samples.fail(reply.error)
            elif reply.x_cache not in (None, "bypass"):
                samples.fail(f"x-cache {reply.x_cache!r}: the gateway's cache answered")
            elif not reply.completion_tokens:
                samples.fail("no usage chunk with completion_tokens")
            _progress()

        connector = aiohttp.TCPConnector(limit=point["concurrency"])
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            clock.begin()
            started = time.perf_counter()
            await _closed_loop(session, point["concurrency"], point["requests"], make, on_reply)
            wall_s = time.perf_counter() - started
            cpu = clock.end()
        _emit(
            {
                "event": "point",
                **point,
                "wall_s": wall_s,
                **cpu,
                "errors": samples.errors,
                "error_samples": samples.error_samples,
                "replies": samples.replies,
            }
        )


def main() -> None:
    job = json.load(sys.stdin)
    runner = {"cache": run_cache, "engine": run_engine}[job["scenario"]]
    try:
        import uvloop
    except ImportError:  # the gateway depends on uvicorn[standard], so normally present
        asyncio.run(runner(job))
    else:
        uvloop.run(runner(job))


if __name__ == "__main__":
    main()
