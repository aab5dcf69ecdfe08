"""The ``routing`` scenario's client process (:mod:`bench.core.client`'s protocol).

Per point: reads both engines' ``/metrics``, sends a closed loop of streamed chat
completions (shared system prompts, short questions) through one gateway, reads the
engines' ``/metrics`` again. The engines' own counters, not the gateway, tell which
engine served a request and how much of the prompts their prefix caches answered.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.core.client import Samples, call, chat_body, closed_loop, emit, progress, stack_cpu
from bench.core.client import serve as serve_job
from bench.routing.workload import messages

CHAT_HANDLER = "/v1/chat/completions"
COUNTERS = {
    "vllm:prefix_cache_queries_total": "prefix_cache_queries",
    "vllm:prefix_cache_hits_total": "prefix_cache_hits",
}


def engine_counters(metrics_text: str) -> dict[str, float]:
    """The vLLM counters the report needs, from one engine's ``/metrics`` text.

    ``prefix_cache_queries`` and ``prefix_cache_hits`` count prompt tokens (looked up /
    found in the prefix cache); ``chat_requests`` counts answered chat completions.
    """
    counters = {"prefix_cache_queries": 0.0, "prefix_cache_hits": 0.0, "chat_requests": 0.0}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name in COUNTERS:
                counters[COUNTERS[sample.name]] += sample.value
            elif sample.name == "http_requests_total" and sample.labels["handler"] == CHAT_HANDLER:
                counters["chat_requests"] += sample.value
    return counters


async def _scrape(session: aiohttp.ClientSession, engines: list[str]) -> list[dict[str, float]]:
    async def one(url: str) -> dict[str, float]:
        async with session.get(url + "/metrics") as response:
            return engine_counters(await response.text())

    return list(await asyncio.gather(*(one(url) for url in engines)))


async def _point(job: dict[str, Any], point: dict[str, Any], measured: bool) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {job['api_key']}", "content-type": "application/json"}
    samples, schedule = Samples(), point["schedule"]

    async def send(i: int) -> None:
        prefix, question = schedule[i]
        chat = messages(point["tag"], prefix, question)
        # Every answer max_tokens long, so both strategies generate the same work.
        body = chat_body(job["model"], chat, job["max_tokens"], stream=True, ignore_eos=True)
        samples.check(await call(session, point["url"], body, headers))
        if measured:
            progress()

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=point["concurrency"])
    pids = (job["engine_pids"], point["gateway_pid"], "engines_cpu_s")
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        before, cpu_before = await _scrape(session, job["engines"]), stack_cpu(*pids)
        started = time.perf_counter()
        await closed_loop(point["concurrency"], len(schedule), send)
        wall_s, cpu_after = time.perf_counter() - started, stack_cpu(*pids)
        # vLLM counts a streamed request once its response has ended on the server side,
        # which can trail the client's last read by a moment.
        await asyncio.sleep(0.3)
        after = await _scrape(session, job["engines"])
    return {
        "event": "point",
        **{k: v for k, v in point.items() if k != "schedule"},
        "wall_s": wall_s,
        **{name: cpu_after[name] - cpu_before[name] for name in cpu_after},
        "engines_before": before,
        "engines_after": after,
        **samples.result(),
    }


async def run(job: dict[str, Any]) -> None:
    # Warm-up (unmeasured): each gateway's upstream pool and both engines, under a tag
    # no measured round uses.
    for warm in job["warmup"]:
        await _point(job, warm, measured=False)
    for point in job["points"]:
        emit({"event": "start", **{k: v for k, v in point.items() if k != "schedule"}})
        emit(await _point(job, point, measured=True))


if __name__ == "__main__":
    serve_job(run)
