"""The ``engine`` scenario: the real engine direct vs through the gateway, a batch-size
sweep in interleaved rounds (:func:`bench.core.stack.real_stack`); writes
engine.{md,json,png}."""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.console import Console

from bench.core.drive import drive
from bench.core.machine import describe, stamp_end
from bench.core.procs import REPO
from bench.core.report import config_of, finish, write
from bench.core.stack import API_KEY, EXTRA_PACKAGES, Stack
from bench.engine import report
from bench.engine.client import engine_prompt
from bench.engine.report import DIRECT, GATEWAY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine scenario (real engine)")
    group.add_argument("--engine-rounds", type=int, default=2, help="interleaved rounds")
    group.add_argument("--engine-concurrency", type=int, nargs="+", default=[1, 8, 32])
    group.add_argument(
        "--engine-requests", type=int, nargs="+", default=[3, 16, 32],
        help="per round and target, one number per --engine-concurrency",
    )  # fmt: skip
    group.add_argument("--engine-max-tokens", type=int, default=64)
    group.add_argument(
        "--engine-no-ignore-eos", dest="engine_ignore_eos", action="store_false",
        help="let answers stop at EOS (default: ignore_eos, every answer max_tokens long)",
    )  # fmt: skip


def apply_quick(args: argparse.Namespace) -> None:
    args.engine_rounds, args.engine_concurrency, args.engine_requests = 1, [1, 4], [2, 4]
    args.engine_max_tokens = 16


def plan(args: argparse.Namespace, stack: Stack) -> list[dict[str, Any]]:
    """Every point of every round; at each concurrency the target order alternates."""
    if len(args.engine_requests) != len(args.engine_concurrency):
        raise SystemExit("--engine-requests needs one number per --engine-concurrency")
    json_headers = {"content-type": "application/json"}
    gateway_headers = {"authorization": f"Bearer {API_KEY}", "x-portico-cache": "off"}
    targets = {
        DIRECT: (stack.engine.base_url, json_headers),
        GATEWAY: (stack.gateway.base_url, {**json_headers, **gateway_headers}),
    }
    points: list[dict[str, Any]] = []
    offset = 0
    for rnd in range(args.engine_rounds):
        pairs = zip(args.engine_concurrency, args.engine_requests, strict=True)
        for g, (conc, requests) in enumerate(pairs):
            for target in (DIRECT, GATEWAY) if (rnd + g) % 2 == 0 else (GATEWAY, DIRECT):
                base, headers = targets[target]
                points.append({
                    "index": len(points), "round": rnd, "target": target,
                    "url": base + "/v1/chat/completions", "headers": headers,
                    "concurrency": conc, "requests": requests, "prompt_offset": offset,
                })  # fmt: skip
                offset += requests
    return points


def _label(event: dict[str, Any]) -> str:
    return f"round {event['round'] + 1} c={event['concurrency']} {event['target']}"


def run(args: argparse.Namespace, stack: Stack, console: Console) -> int:
    machine = describe(REPO, EXTRA_PACKAGES)
    points = plan(args, stack)
    job = {
        "scenario": "engine", "model": stack.model, "max_tokens": args.engine_max_tokens,
        "ignore_eos": args.engine_ignore_eos, "engine_pid": stack.engine.pid,
        "gateway_pid": stack.gateway.pid, "points": points,
        "warmup": [{"url": p["url"], "headers": p["headers"]} for p in points[:2]],  # one each
    }  # fmt: skip
    total = sum(p["requests"] for p in points)
    started = time.monotonic()
    log = args.out / "logs" / "engine-load-engine.log"
    results = drive("bench.engine.client", job, total, log, console, _label)
    stamp_end(machine)
    config = config_of(args, **stack.config(), prompt_example=engine_prompt(0))
    config["engine_wall_s"] = time.monotonic() - started
    summary = report.summarize(results)
    payload = {"machine": machine, "config": config, "summary": summary, "points": results}
    paths = write(args.out, "engine", report.markdown(machine, config, summary), payload)
    subtitle = f"nproc {machine['nproc']}, {machine['date_utc']}; one run, compare ratios"
    paths.append(report.plot(summary, args.out / "engine.png", subtitle))
    report.print_summary(console, summary)
    return finish(console, paths, summary["errors"], summary["error_samples"])
