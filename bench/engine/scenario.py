"""The ``engine`` scenario: the real engine direct vs through the gateway, a batch-size
sweep in interleaved rounds (:mod:`bench.core.versus` on
:func:`bench.core.stack.real_stack`); writes engine.{md,json,png}."""

from __future__ import annotations

import argparse
import functools
import time

from rich.console import Console

from bench.core import versus
from bench.core.drive import drive
from bench.core.machine import describe, stamp_end
from bench.core.procs import REPO
from bench.core.report import config_of, publish, subtitle
from bench.core.stack import EXTRA_PACKAGES, Stack
from bench.engine import report
from bench.engine.client import engine_prompt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument_group("engine scenario (real engine)").add_argument
    versus.add_arguments(add, "engine", 2, [1, 8, 32], [3, 16, 32])
    add("--engine-max-tokens", type=int, default=64)
    add(
        "--engine-no-ignore-eos", dest="engine_ignore_eos", action="store_false",
        help="let answers stop at EOS (default: ignore_eos, every answer max_tokens long)",
    )  # fmt: skip


def apply_quick(args: argparse.Namespace) -> None:
    args.engine_rounds, args.engine_concurrency, args.engine_requests = 1, [1, 4], [2, 4]
    args.engine_max_tokens = 16


def run(args: argparse.Namespace, stack: Stack, console: Console) -> int:
    machine = describe(REPO, EXTRA_PACKAGES)
    urls = {versus.DIRECT: stack.engine.base_url, versus.GATEWAY: stack.gateway.base_url}
    points = versus.plan(args, "engine", urls, "/v1/chat/completions")
    job = {
        "scenario": "engine", "model": stack.model, "max_tokens": args.engine_max_tokens,
        "ignore_eos": args.engine_ignore_eos, "engine_pid": stack.engine.pid,
        "gateway_pid": stack.gateway.pid, "points": points,
    }  # fmt: skip
    total, started = sum(p["requests"] for p in points), time.monotonic()
    log = args.out / "logs" / "engine-load-engine.log"
    results = drive("bench.engine.client", job, total, log, console, versus.label)
    stamp_end(machine)
    config = config_of(args, **stack.config(), prompt_example=engine_prompt(0))
    config["engine_wall_s"] = time.monotonic() - started
    summary = report.summarize(results)
    payload = {"machine": machine, "config": config, "summary": summary, "points": results}
    report.print_summary(console, summary)
    plot = functools.partial(report.plot, summary, sub=subtitle(machine))
    markdown = report.markdown(machine, config, summary)
    return publish(console, args.out, "engine", markdown, payload, plot, summary)
