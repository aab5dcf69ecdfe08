"""The ``cache`` scenario: response-cache hit vs miss through the gateway, on the real
engine (:func:`bench.core.stack.real_stack`); writes cache.{md,json,png}."""

from __future__ import annotations

import argparse
import functools

from rich.console import Console

from bench.cache import report
from bench.core.drive import drive
from bench.core.machine import describe, stamp_end
from bench.core.procs import REPO
from bench.core.report import config_of, publish, subtitle
from bench.core.stack import API_KEY, EXTRA_PACKAGES, Stack

SUBJECTS = (
    "photosynthesis", "a black hole", "the water cycle", "a compiler", "inflation in economics",
    "plate tectonics", "a vaccine", "the printing press", "a neural network", "the moon's phases",
    "a rainbow", "an earthquake", "a hash table", "the Roman Empire", "a volcano", "the internet",
)  # fmt: skip


def prompt(n: int) -> str:
    return f"Question {n}: in two sentences, what is {SUBJECTS[n % len(SUBJECTS)]}?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument_group("cache scenario (real engine)").add_argument
    add("--cache-prompts", type=int, default=10, help="non-stream miss/hit prompts")
    add("--cache-stream-prompts", type=int, default=5, help="streamed miss/hit")
    add("--cache-max-tokens", type=int, default=32)
    add("--cache-hit-repeats", type=int, default=3, help="hits per prompt (each kind); cheap")


def apply_quick(args: argparse.Namespace) -> None:
    args.cache_prompts, args.cache_stream_prompts, args.cache_max_tokens = 3, 2, 16


def run(args: argparse.Namespace, stack: Stack, console: Console) -> int:
    machine = describe(REPO, EXTRA_PACKAGES)
    n, n_stream = args.cache_prompts, args.cache_stream_prompts
    base = stack.gateway.base_url
    job = {
        "scenario": "cache", "url": base + "/v1/chat/completions", "metrics_url": base + "/metrics",
        "api_key": API_KEY, "engine_pid": stack.engine.pid, "gateway_pid": stack.gateway.pid,
        "model": stack.model, "max_tokens": args.cache_max_tokens,
        "hit_repeats": args.cache_hit_repeats, "prompts": [prompt(i) for i in range(n)],
        "stream_prompts": [prompt(i) for i in range(n, n + n_stream)],
        "warmup_prompts": [prompt(i) for i in range(1000, 1004)],
    }  # fmt: skip
    total = (n + n_stream) * (1 + args.cache_hit_repeats)
    log = args.out / "logs" / "engine-load-cache.log"
    (point,) = drive("bench.cache.client", job, total, log, console, lambda e: e["label"])
    stamp_end(machine)
    config = config_of(args, **stack.config())
    summary = report.summarize(point)
    payload = {"machine": machine, "config": config, "summary": summary, "job": job, **point}
    report.print_summary(console, summary)
    plot = functools.partial(report.plot, point["replies"], summary, sub=subtitle(machine))
    markdown = report.markdown(machine, config, summary)
    return publish(console, args.out, "cache", markdown, payload, plot, summary)
