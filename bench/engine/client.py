"""The ``engine`` scenario's client process (:mod:`bench.core.client`'s protocol).

Closed-loop streamed chat completions at a concurrency, one point per (round,
concurrency, target): time to the first token, completion tokens from the usage chunk,
CPU of the engine's process tree, the gateway and this process around the measured
phase.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from bench.core.client import (
    Reply,
    Samples,
    call,
    chat_body,
    closed_loop,
    emit,
    progress,
    stack_cpu,
)
from bench.core.client import serve as serve_job

TOPICS = (
    "a lighthouse keeper", "a city built on stilts", "a clockmaker's apprentice",
    "a desert caravan", "a forgotten library", "a mountain observatory", "a river ferry",
    "a winter market", "a robot gardener", "an island post office", "a night train",
    "a beekeeper", "a cartographer", "a travelling circus", "a deep-sea station",
    "a village bakery",
)  # fmt: skip
TIMEOUT = aiohttp.ClientTimeout(total=600)


def engine_prompt(n: int) -> str:
    """The ``n``-th prompt of the engine scenario: unique per request, similar length."""
    topic = TOPICS[n % len(TOPICS)]
    return f"Request {n}. Write a long, detailed story about {topic}, with many characters."


def _body(job: dict[str, Any], n: int, max_tokens: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": engine_prompt(n)}]
    body = chat_body(job["model"], messages, max_tokens, stream=True)
    if job["ignore_eos"]:
        body["ignore_eos"] = True  # vLLM: always generate max_tokens (as vLLM's own benchmarks)
    return body


def check(samples: Samples, reply: Reply) -> None:
    """Keep the reply (without its text); count it failed if it has no usage or came from
    the gateway's cache, which must stay out of this comparison."""
    samples.replies.append(reply.row())
    if reply.error is not None:
        samples.fail(reply.error)
    elif reply.x_cache not in (None, "bypass"):
        samples.fail(f"x-cache {reply.x_cache!r}: the gateway's cache answered")
    elif not reply.completion_tokens:
        samples.fail("no usage chunk with completion_tokens")
    progress()


async def _point(job: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    samples = Samples()
    url, headers = point["url"], point["headers"]

    async def send(i: int) -> None:
        body = _body(job, point["prompt_offset"] + i, job["max_tokens"])
        check(samples, await call(session, url, body, headers))

    connector = aiohttp.TCPConnector(limit=point["concurrency"])
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        before, started = stack_cpu([job["engine_pid"]], job["gateway_pid"]), time.perf_counter()
        await closed_loop(point["concurrency"], point["requests"], send)
        wall_s = time.perf_counter() - started
        after = stack_cpu([job["engine_pid"]], job["gateway_pid"])
    cpu_used = {name: after[name] - before[name] for name in after}
    return {"event": "point", **point, "wall_s": wall_s, **cpu_used, **samples.result()}


async def run(job: dict[str, Any]) -> None:
    # Warm-up (unmeasured): a few short requests per target, some concurrent.
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for target in job["warmup"]:

            async def warm(i: int, target: dict[str, Any] = target) -> None:
                await call(session, target["url"], _body(job, 10_000_000 + i, 8), target["headers"])

            await closed_loop(4, 8, warm)
    for point in job["points"]:
        emit({"event": "start", **point})
        emit(await _point(job, point))


if __name__ == "__main__":
    serve_job(run)
