"""The ``engine`` scenario's client process (:mod:`bench.core.client`'s protocol).

Closed-loop streamed chat completions at a concurrency, one point per (round,
concurrency, target): time to the first token, completion tokens from the usage chunk,
CPU of the engine's process tree, the gateway and this process around the measured
phase.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from bench.core.client import Samples, call, chat_body, run_points, serve, stack_cpu

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


async def run(job: dict[str, Any]) -> None:
    async def send(
        session: aiohttp.ClientSession, point: dict[str, Any], n: int, samples: Samples | None
    ) -> None:
        # Warm-up requests are short: they only wake the engine and the pools.
        max_tokens = 8 if samples is None else job["max_tokens"]
        messages = [{"role": "user", "content": engine_prompt(n)}]
        body = chat_body(job["model"], messages, max_tokens, stream=True)
        if job["ignore_eos"]:
            body["ignore_eos"] = True  # vLLM: always generate max_tokens (as vLLM's own benchmarks)
        reply = await call(session, point["url"], body, point["headers"])
        if samples is not None:
            samples.check(reply)

    await run_points(
        job, send, 8, TIMEOUT, lambda: stack_cpu([job["engine_pid"]], job["gateway_pid"])
    )


if __name__ == "__main__":
    serve(run)
