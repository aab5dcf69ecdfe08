"""The ``routing`` scenario's client, in its own process (like ``engine_load.py``).

Reads one job (JSON) on stdin, writes JSON lines on stdout in ``engine_load.py``'s
protocol (``start``, ``progress``, ``point`` events). Per point: reads both engines'
``/metrics``, sends a closed loop of streamed chat completions (shared system prompts,
short questions) through one gateway, reads the engines' ``/metrics`` again. The
engines' own counters, not the gateway, tell which engine served a request and how much
of the prompts their prefix caches answered.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict
from typing import Any

import aiohttp
from engine_load import Reply, Samples, _closed_loop, _cpu_s, _emit, _machine_busy_s, _progress
from prometheus_client.parser import text_string_to_metric_families
from routing_workload import messages

CHAT_HANDLER = "/v1/chat/completions"


def engine_counters(metrics_text: str) -> dict[str, float]:
    """The vLLM counters the report needs, from one engine's ``/metrics`` text.

    ``prefix_cache_queries`` and ``prefix_cache_hits`` count prompt tokens (looked up /
    found in the prefix cache); ``chat_requests`` counts answered chat completions.
    """
    counters = {"prefix_cache_queries": 0.0, "prefix_cache_hits": 0.0, "chat_requests": 0.0}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "vllm:prefix_cache_queries_total":
                counters["prefix_cache_queries"] += sample.value
            elif sample.name == "vllm:prefix_cache_hits_total":
                counters["prefix_cache_hits"] += sample.value
            elif sample.name == "http_requests_total" and sample.labels["handler"] == CHAT_HANDLER:
                counters["chat_requests"] += sample.value
    return counters


async def _scrape(session: aiohttp.ClientSession, engines: list[str]) -> list[dict[str, float]]:
    async def one(url: str) -> dict[str, float]:
        async with session.get(url + "/metrics") as response:
            return engine_counters(await response.text())

    return list(await asyncio.gather(*(one(url) for url in engines)))


def _body(job: dict[str, Any], tag: str, prefix: int, question: int) -> dict[str, Any]:
    return {
        "model": job["model"],
        "messages": messages(tag, prefix, question),
        "max_tokens": job["max_tokens"],
        "temperature": 0,
        # Every answer max_tokens long, so both strategies generate the same work.
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _cpu(engine_pids: list[int], gateway_pid: int) -> dict[str, float]:
    return {
        "engines_cpu_s": sum(_cpu_s(pid, tree=True) for pid in engine_pids),
        "gateway_cpu_s": _cpu_s(gateway_pid),
        "loadgen_cpu_s": time.process_time(),
        "machine_busy_cpu_s": _machine_busy_s(),
    }


async def _point(job: dict[str, Any], point: dict[str, Any], measured: bool) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {job['api_key']}", "content-type": "application/json"}
    samples = Samples()
    schedule = point["schedule"]

    def make(i: int) -> tuple[str, dict[str, Any], dict[str, str]]:
        prefix, question = schedule[i]
        return point["url"], _body(job, point["tag"], prefix, question), headers

    def on_reply(reply: Reply) -> None:
        row = asdict(reply)
        del row["text"]
        samples.replies.append(row)
        if reply.error is not None:
            samples.fail(reply.error)
        elif reply.x_cache == "hit":
            samples.fail("the gateway's response cache answered (it should be off)")
        elif not reply.completion_tokens:
            samples.fail("no usage chunk with completion_tokens")
        if measured:
            _progress()

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=point["concurrency"])
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        before = await _scrape(session, job["engines"])
        cpu_before = _cpu(job["engine_pids"], point["gateway_pid"])
        started = time.perf_counter()
        await _closed_loop(session, point["concurrency"], len(schedule), make, on_reply)
        wall_s = time.perf_counter() - started
        cpu_after = _cpu(job["engine_pids"], point["gateway_pid"])
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
        "errors": samples.errors,
        "error_samples": samples.error_samples,
        "replies": samples.replies,
    }


async def run(job: dict[str, Any]) -> None:
    # Warm-up (unmeasured): each gateway's upstream pool and both engines, under a tag
    # no measured round uses.
    for warm in job["warmup"]:
        await _point(job, warm, measured=False)
    for point in job["points"]:
        _emit({"event": "start", **{k: v for k, v in point.items() if k != "schedule"}})
        _emit(await _point(job, point, measured=True))


def main() -> None:
    job = json.load(sys.stdin)
    try:
        import uvloop
    except ImportError:  # the gateway depends on uvicorn[standard], so normally present
        asyncio.run(run(job))
    else:
        uvloop.run(run(job))


if __name__ == "__main__":
    main()
