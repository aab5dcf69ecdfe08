"""The ``cache`` scenario's client process (:mod:`bench.core.client`'s protocol).

Sequential requests through the gateway; each prompt once (a miss: the engine answers)
and again (hits, ``hit_repeats`` times each; non-streamed prompts and streamed ones,
each shape its own entry), checking the ``x-cache`` header and that a hit returns the
miss's text. Reads the gateway's ``/metrics`` after the warm-up and at the end.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from bench.core.client import Reply, Samples, call, chat_body, emit, progress, stack_cpu
from bench.core.client import serve as serve_job


def record(
    samples: Samples, kind: str, index: int, reply: Reply, expect: str, text: str | None
) -> None:
    """Keep the reply; check its ``x-cache`` and that a hit repeats the miss's ``text``."""
    row = {"kind": kind, "prompt": index, **reply.row(text=True)}
    row["text_matches"] = text is None or reply.text == text
    samples.replies.append(row)
    if reply.error is not None:
        samples.fail(f"{kind} #{index}: {reply.error}")
    elif reply.x_cache != expect:
        samples.fail(f"{kind} #{index}: x-cache {reply.x_cache!r}, expected {expect!r}")
    elif not row["text_matches"]:
        samples.fail(f"{kind} #{index}: text differs from the miss: {reply.text[:100]!r}")
    progress()


async def run(job: dict[str, Any]) -> None:
    url, headers = (
        job["url"],
        {"authorization": f"Bearer {job['api_key']}", "content-type": "application/json"},
    )

    async def send(prompt: str, stream: bool, extra: dict[str, str] | None = None) -> Reply:
        body = chat_body(
            job["model"], [{"role": "user", "content": prompt}], job["max_tokens"], stream=stream
        )
        return await call(session, url, body, {**headers, **(extra or {})})

    samples, pids = Samples(), [job["engine_pid"]]
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), timeout=timeout
    ) as session:
        # Warm-up (unmeasured): the engine, the gateway's upstream pool, one store and hit.
        for i, prompt in enumerate(job["warmup_prompts"]):
            await send(prompt, i % 2 == 1, {"x-portico-cache": "off"})
        for stream in (False, True, False):
            await send(job["warmup_prompts"][0], stream)
        async with session.get(job["metrics_url"]) as response:
            metrics_before = await response.text()
        before, started = stack_cpu(pids, job["gateway_pid"]), time.perf_counter()
        for stream, prompts in ((False, job["prompts"]), (True, job["stream_prompts"])):
            kind = "stream-" if stream else ""
            for i, prompt in enumerate(prompts):
                label = f"{'stream' if stream else 'non-stream'} prompt {i + 1}"
                emit({"event": "start", "label": label})
                miss = await send(prompt, stream)
                record(samples, f"{kind}miss", i, miss, "miss", None)
                for _ in range(job["hit_repeats"]):
                    hit = await send(prompt, stream)
                    record(samples, f"{kind}hit", i, hit, "hit", miss.text)
        wall_s, after = time.perf_counter() - started, stack_cpu(pids, job["gateway_pid"])
        async with session.get(job["metrics_url"]) as response:
            metrics_after = await response.text()
    emit(
        {
            "event": "point",
            "wall_s": wall_s,
            **{name: after[name] - before[name] for name in after},
            **samples.result(),
            "metrics_before": metrics_before,
            "metrics_after": metrics_after,
        }
    )


if __name__ == "__main__":
    serve_job(run)
