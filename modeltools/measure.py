"""Measurements on a running vLLM engine: perplexity, speed, memory, answers.

Every function takes the engine's base URL (or a process id) and plain values,
so ``portico model compare``, the benchmark and the tests share one
implementation. Perplexity comes from vLLM itself: a completion request with
``echo`` and ``logprobs`` returns the log-probability of every prompt token
under the served weights and kernels, which is the number that matters for a
quantized checkpoint (its int4/int8 kernels included).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

_TIMEOUT = httpx.Timeout(600.0, connect=5.0)  # a 4 tokens/s engine under load is slow

PROMPTS = (
    "What is the capital of France?",
    "Name three primary colours.",
    "What is 12 times 7?",
    "Write a Python function that returns the square of a number.",
    "Translate 'good morning' into French.",
    "In one sentence, why is the sky blue?",
)


@dataclass(frozen=True)
class Speed:
    """Greedy generation at one concurrency level."""

    concurrency: int
    requests: int
    tokens_per_s: float
    """Completion tokens of all requests over the wall time of the whole batch."""
    ttft_p50_s: float
    """Median time from sending a streamed request to its first content chunk."""


def served_model(base_url: str) -> str:
    """The one model name the engine serves."""
    response = httpx.get(f"{base_url}/v1/models", timeout=10)
    response.raise_for_status()
    name: str = response.json()["data"][0]["id"]
    return name


def perplexity(base_url: str, model: str, texts: Sequence[str], concurrency: int = 8) -> float:
    """exp of the mean negative log-likelihood per token over all ``texts``.

    The first token of each text has no context and no log-probability; it is
    left out. The token generated after the prompt (max_tokens=1) is cut off
    by counting the prompt tokens vLLM reports. Requests go ``concurrency`` at
    a time: vLLM batches their prefills, which matters for slow int4 kernels.
    """

    def score(client: httpx.Client, text: str) -> list[float]:
        response = client.post(
            "/v1/completions",
            json={
                "model": model,
                "prompt": text,
                "max_tokens": 1,
                "temperature": 0,
                "echo": True,
                "logprobs": 0,
            },
        )
        response.raise_for_status()
        body = response.json()
        prompt_tokens = body["usage"]["prompt_tokens"]
        logprobs = body["choices"][0]["logprobs"]["token_logprobs"][:prompt_tokens]
        return [lp for lp in logprobs if lp is not None]

    with (
        httpx.Client(base_url=base_url, timeout=_TIMEOUT) as client,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        scored = [lp for lps in pool.map(lambda t: score(client, t), texts) for lp in lps]
    return _from_logprobs(scored)


def local_perplexity(directory: Path, texts: Sequence[str]) -> float:
    """The same number computed with transformers on CPU, in float32.

    For checkpoints vLLM cannot serve on this machine (W4A16 without AVX-512):
    transformers decompresses compressed-tensors int4 weights to dense ones.
    For weight-only schemes that is exactly what the int4 kernels compute, up
    to float rounding; it cannot emulate int8 activations, so W4A8 is measured
    on vLLM only.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    network = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    scored: list[float] = []
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids
            logits = network(ids).logits[0, :-1].float()
            picked = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])
            scored += picked.squeeze(1).tolist()
    return _from_logprobs(scored)


def _from_logprobs(logprobs: Sequence[float]) -> float:
    if not logprobs:
        raise ValueError("no token was scored")
    return math.exp(-sum(logprobs) / len(logprobs))


def answers(base_url: str, model: str, prompts: Sequence[str] = PROMPTS) -> list[str]:
    """Greedy chat answers, one per prompt."""
    replies = []
    with httpx.Client(base_url=base_url, timeout=_TIMEOUT) as client:
        for prompt in prompts:
            response = client.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 48,
                    "temperature": 0,
                },
            )
            response.raise_for_status()
            replies.append(response.json()["choices"][0]["message"]["content"].strip())
    return replies


def speed(base_url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> Speed:
    """``requests`` streamed chat completions, ``concurrency`` at a time, each
    generating exactly ``max_tokens`` (ignore_eos) so every model does equal work."""

    def one(n: int) -> tuple[float, int]:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"Story {n}: tell me about a lighthouse."}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        sent = time.monotonic()
        first: float | None = None
        tokens = 0
        with (
            httpx.Client(base_url=base_url, timeout=_TIMEOUT) as client,
            client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line.removeprefix("data: "))
                if first is None and any(
                    c.get("delta", {}).get("content") for c in chunk.get("choices", [])
                ):
                    first = time.monotonic() - sent
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        return (first if first is not None else time.monotonic() - sent), tokens

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.monotonic() - began
    ttfts = sorted(ttft for ttft, _ in results)
    return Speed(
        concurrency=concurrency,
        requests=requests,
        tokens_per_s=sum(tokens for _, tokens in results) / wall,
        ttft_p50_s=ttfts[len(ttfts) // 2],
    )


def tree_pss_bytes(pid: int, proc: Path = Path("/proc")) -> int:
    """Proportional set size of a process and all its descendants.

    vLLM runs its engine core in a child process; PSS (not RSS) splits shared
    pages (torch's libraries, mapped weights) between the processes that map
    them, so the sum is what the tree really costs.
    """
    children: dict[int, list[int]] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process exited while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        pending += children.get(current, [])
        try:
            rollup = (proc / str(current) / "smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
    return total


def directory_bytes(directory: Path) -> int:
    """Size of the files vLLM loads: weights, config, tokenizer."""
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
