"""The ``overhead`` scenario: the gateway's own overhead, against a fake upstream.

Starts a fake upstream and the targets in front of it (Portico with one
and with two workers, a minimal proxy; ``direct`` is the upstream itself),
drives them from :mod:`bench.overhead.load` in interleaved rounds, and writes
gateway_overhead.{md,json,png}. See bench/README.md.
"""

from __future__ import annotations

import argparse
import functools
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.core import procs
from bench.core.drive import drive
from bench.core.machine import describe, stamp_end
from bench.core.procs import REPO, Service
from bench.core.report import config_of, publish
from bench.core.stack import API_KEY, LIMITS, REDIS_URL, delete_namespace
from bench.overhead import report
from bench.overhead.fake_upstream import STREAM_CHUNKS
from bench.overhead.report import DIRECT, GW_2W, GW_AIOHTTP, MINIMAL

TARGETS = (DIRECT, GW_AIOHTTP, MINIMAL)
# Multi-worker scaling is a closed-loop throughput question: that target runs only there.
CLOSED_TARGETS = (*TARGETS, GW_2W)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument_group("overhead scenario (fake upstream)").add_argument
    add("--rounds", type=int, default=4, help="interleaved rounds")
    add("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    add("--rates", type=float, nargs="+", default=[100.0, 200.0], help="open-loop requests/s")
    add("--open-seconds", type=float, default=4.0, help="per open-loop point and round")
    add("--requests", type=int, default=2000, help="per target and c > 1")
    add("--requests-c1", type=int, default=1000, help="per target at c = 1")
    add("--warmup", type=int, default=100, help="unmeasured, per point")
    add("--stream-concurrency", type=int, nargs="+", default=[1, 8])
    add("--stream-requests", type=int, default=400, help="per target and c")
    add("--stream-gap-ms", type=float, default=2.0)


def apply_quick(args: argparse.Namespace) -> None:
    args.rounds, args.requests, args.requests_c1 = 2, 200, 100
    args.warmup, args.stream_requests, args.open_seconds = 20, 40, 0.5


def features_env(prefix: str) -> dict[str, str]:
    """Every feature on, as the issue's targets ask: API-key auth, rate limits and the
    response cache in Redis (limits high enough never to refuse; each request misses
    the cache, is forwarded, and is stored), metrics, the access log."""
    return {
        "PORTICO_API_KEYS": API_KEY,
        "PORTICO_REDIS_URL": REDIS_URL,
        "PORTICO_REDIS__PREFIX": prefix,
        **LIMITS,
    }


def build_services(log_dir: Path, stream_gap_ms: float, prefix: str) -> dict[str, Service]:
    """The fake upstream (as ``direct``) and the proxies in front of it."""
    upstream = procs.fake_upstream_service(log_dir / "fake-upstream.log", stream_gap_ms)

    def gateway(name: str, workers: int = 1) -> Service:
        env = {"PORTICO_ENGINE_URL": upstream.base_url, **features_env(f"{prefix}-{name}")}
        return procs.gateway_service(name, log_dir / f"{name}.log", env, workers)

    return {
        DIRECT: upstream,
        GW_AIOHTTP: gateway(GW_AIOHTTP),
        GW_2W: gateway(GW_2W, workers=2),
        MINIMAL: procs.minimal_proxy_service(
            MINIMAL, log_dir / f"{MINIMAL}.log", upstream.base_url
        ),
    }


def build_plan(args: argparse.Namespace, services: dict[str, Service]) -> list[dict[str, Any]]:
    """Every point of every round. Within a round the target order rotates per point group."""
    # (stream, concurrency, requests per round, open-loop rate or 0, targets)
    groups: list[tuple[bool, int, int, float, tuple[str, ...]]] = []
    for conc in args.concurrency:
        total = args.requests_c1 if conc == 1 else args.requests
        groups.append((False, conc, max(1, total // args.rounds), 0.0, CLOSED_TARGETS))
    for rate in args.rates:
        # concurrency 8 sizes the warm-up only; the schedule sets the load.
        groups.append((False, 8, max(1, int(rate * args.open_seconds)), rate, TARGETS))
    for conc in args.stream_concurrency:
        groups.append((True, conc, max(1, args.stream_requests // args.rounds), 0.0, TARGETS))
    points: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        for g, (stream, conc, requests, rate, targets) in enumerate(groups):
            shift = (rnd + g) % len(targets)
            for target in targets[shift:] + targets[:shift]:
                url = services[target].base_url + "/v1/chat/completions"
                points.append({
                    "index": len(points), "target": target, "url": url,
                    "target_pid": services[target].pid, "upstream_pid": services[DIRECT].pid,
                    "concurrency": conc, "requests": requests, "warmup": max(args.warmup, 2 * conc),
                    "stream": stream, "round": rnd, "rate": rate,
                })  # fmt: skip
    return points


def _label(event: dict[str, Any]) -> str:
    level = f"{event['rate']:g}/s" if event["rate"] else f"c={event['concurrency']}"
    kind = "stream" if event["stream"] else "non-stream"
    return f"round {event['round'] + 1} {kind} {level} {event['target']}"


def run(args: argparse.Namespace, console: Console) -> int:
    """The gateway-overhead scenario; 0 if every request succeeded."""
    log_dir = args.out / "logs"
    machine = describe(REPO)
    started = time.monotonic()
    prefix = f"bench-overhead-{uuid.uuid4().hex[:8]}"
    services = build_services(log_dir, args.stream_gap_ms, prefix)
    with ExitStack() as stack:
        stack.callback(delete_namespace, prefix)
        with console.status(f"starting {', '.join(services)}"):
            stack.enter_context(procs.running(list(services.values())))
        plan = build_plan(args, services)
        console.print(f"{len(plan)} points, {args.rounds} rounds, logs in {log_dir}")
        job = {"scenario": "overhead", "points": plan}
        total = sum(p["requests"] for p in plan)
        points = drive("bench.overhead.load", job, total, log_dir / "load.log", console, _label)
    stamp_end(machine)
    config = config_of(args, targets=list(CLOSED_TARGETS), stream_chunks=STREAM_CHUNKS)
    config["wall_s"] = time.monotonic() - started
    walls = [p["wall_s"] for p in points]
    config["background_mean"] = sum(map(report.background, points)) / sum(walls)
    config["background_max"] = max(report.background(p) / p["wall_s"] for p in points)
    rows = report.summarize(points, CLOSED_TARGETS)
    payload = {"machine": machine, "config": config, "rows": rows, "points": points}
    report.print_summary(console, rows)
    subtitle = f"nproc {machine['nproc']}, Python {machine['python']}, {machine['date_utc']}"
    plot = functools.partial(report.plot, rows, subtitle=subtitle)
    markdown = report.markdown(machine, config, rows)
    errors = {
        "errors": sum(r["errors"] for r in rows),
        "error_samples": "see the error samples in the JSON",
    }
    return publish(console, args.out, "gateway_overhead", markdown, payload, plot, errors)
