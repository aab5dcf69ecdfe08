"""`make bench`: Portico's benchmarks. ``--scenarios`` picks some (default: all).

- ``overhead``: the gateway's own overhead, measured against a fake upstream.
  Starts a fake upstream and four targets (direct, Portico with each upstream
  transport, a minimal proxy), drives them from a separate load-generator
  process in interleaved rounds, and writes bench/results/gateway_overhead.{md,json,png}.
- ``cache`` and ``engine``: on the real vLLM CPU engine, started once for both
  (see real.py); write bench/results/{cache,engine}.{md,json,png}.
- ``routing``: round-robin vs prefix affinity over two real engines (see
  routing.py); writes bench/results/routing.{md,json,png}.
- ``quantization``: the bundled model against its GPTQ W4A8 quantization
  (``portico model compare``, see quantization.py); writes
  bench/results/quantization.{md,json,png}.

See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import plot
import quantization
import real
import report
import routing
from fake_upstream import STREAM_CHUNKS
from machine import describe
from procs import Service, fake_upstream_service, free_port, gateway_service
from report import GW_2W, GW_AIOHTTP, GW_HTTPX, MINIMAL
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from stats import DIRECT, Row, background_cores, closed_loop, open_loop, summarize

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TARGETS = (DIRECT, GW_AIOHTTP, GW_HTTPX, MINIMAL)
# Multi-worker scaling is a closed-loop throughput question: that target runs only there.
CLOSED_TARGETS = (*TARGETS, GW_2W)
API_KEY = "bench-key"
SCENARIOS = ("overhead", *real.SCENARIOS, routing.SCENARIO, "quantization")


def _scenarios(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown) or '(none)'}; choose from {','.join(SCENARIOS)}"
        )
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Portico's benchmarks: the gateway's own overhead (fake upstream), "
        "the response cache and the engine through the gateway (real vLLM CPU engine), "
        "round-robin vs prefix-affinity routing (two real engines)."
    )
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=list(SCENARIOS),
        help=f"comma-separated, any of {','.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[100.0, 200.0], help="open-loop requests/s"
    )
    parser.add_argument(
        "--open-seconds", type=float, default=4.0, help="per open-loop point and round"
    )
    parser.add_argument("--requests", type=int, default=2000, help="per target and c > 1")
    parser.add_argument("--requests-c1", type=int, default=1000, help="per target at c = 1")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured, per point")
    parser.add_argument("--stream-concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--stream-requests", type=int, default=400, help="per target and c")
    parser.add_argument("--stream-gap-ms", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (numbers useless)")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    real.add_arguments(parser)
    routing.add_arguments(parser)
    quantization.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.requests_c1 = 2, 200, 100
        args.warmup, args.stream_requests, args.open_seconds = 20, 40, 0.5
        real.apply_quick(args)
        routing.apply_quick(args)
    return args


def features_env(prefix: str) -> dict[str, str]:
    """Every feature on, as the issue's targets ask: API-key auth, rate limits and the
    response cache in Redis (limits high enough never to refuse; each request misses
    the cache, is forwarded, and is stored), metrics, the access log."""
    return {
        "PORTICO_API_KEYS": API_KEY,
        "PORTICO_REDIS_URL": real.REDIS_URL,
        "PORTICO_REDIS__PREFIX": prefix,
        "PORTICO_RATE_LIMITS__DEFAULT_RPM": "1000000000",
        "PORTICO_RATE_LIMITS__DEFAULT_TPM": "1000000000000",
    }


def build_services(
    log_dir: Path, stream_gap_ms: float, prefix: str
) -> tuple[Service, dict[str, Service]]:
    """The fake upstream and the proxies in front of it (direct is the upstream itself)."""
    py = sys.executable
    upstream = fake_upstream_service(log_dir / "fake-upstream.log", stream_gap_ms)

    def gateway(name: str, transport: str, workers: int = 1) -> Service:
        env = {
            "PORTICO_UPSTREAM_TRANSPORT": transport,
            "PORTICO_ENGINE_URL": upstream.base_url,
            **features_env(f"{prefix}-{name}"),
        }
        return gateway_service(name, log_dir / f"{name}.log", env, workers)

    minimal_port = free_port()
    proxies = {
        GW_AIOHTTP: gateway(GW_AIOHTTP, "aiohttp"),
        GW_HTTPX: gateway(GW_HTTPX, "httpx"),
        GW_2W: gateway(GW_2W, "aiohttp", workers=2),
        MINIMAL: Service(
            name=MINIMAL,
            argv=[
                *(py, str(BENCH / "minimal_proxy.py"), "--port", str(minimal_port)),
                *("--upstream", upstream.base_url),
            ],
            port=minimal_port,
            ready_path="/health",
            log_path=log_dir / f"{MINIMAL}.log",
        ),
    }
    return upstream, proxies


def build_plan(
    args: argparse.Namespace, upstream: Service, proxies: dict[str, Service]
) -> list[dict[str, Any]]:
    """Every point of every round. Within a round the target order rotates per point group."""

    def endpoint(target: str) -> tuple[str, int]:
        service = upstream if target == DIRECT else proxies[target]
        return service.base_url + "/v1/chat/completions", service.pid

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
                url, pid = endpoint(target)
                points.append(
                    {
                        "index": len(points),
                        "target": target,
                        "url": url,
                        "target_pid": pid,
                        "upstream_pid": upstream.pid,
                        "concurrency": conc,
                        "requests": requests,
                        "warmup": max(args.warmup, 2 * conc),
                        "stream": stream,
                        "round": rnd,
                        "rate": rate,
                    }
                )
    return points


@contextmanager
def running(services: Sequence[Service], console: Console) -> Iterator[None]:
    """Start all, wait until each is ready; stop all on the way out, whatever happens."""
    with ExitStack() as stack:
        with console.status(f"starting {', '.join(s.name for s in services)}"):
            for service in services:
                stack.callback(service.stop)
                service.start()
            for service in services:
                service.wait_ready()
        yield


def drive(plan: list[dict[str, Any]], log_dir: Path, console: Console) -> list[dict[str, Any]]:
    """Run the load generator over the plan with a progress bar; return its result points."""
    results: list[dict[str, Any]] = []
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("requests"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with (
        (log_dir / "load.log").open("wb") as log,
        Progress(*columns, console=console) as progress,
    ):
        task = progress.add_task("starting", total=sum(p["requests"] for p in plan))
        load = subprocess.Popen(
            [sys.executable, str(BENCH / "load.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            assert load.stdin is not None
            assert load.stdout is not None
            load.stdin.write(json.dumps({"points": plan}))
            load.stdin.close()
            for line in load.stdout:
                event = json.loads(line)
                kind = "stream" if event["stream"] else "non-stream"
                level = f"{event['rate']:g}/s" if event["rate"] else f"c={event['concurrency']}"
                label = f"round {event['round'] + 1} {kind} {level}"
                if event["event"] == "start":
                    progress.update(task, description=f"{label} {event['target']}")
                else:
                    results.append(event)
                    progress.advance(task, event["requests"])
            if load.wait() != 0 or len(results) != len(plan):
                raise RuntimeError(f"load generator failed; see {log_dir / 'load.log'}")
        finally:
            if load.poll() is None:
                load.terminate()
                try:
                    load.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    load.kill()
                    load.wait()
    return results


def print_summary(console: Console, rows: Sequence[Row]) -> None:
    table = Table(title="non-streamed (CPU ms/req = target CPU s per 1000 requests)")
    columns = ("target", "c", "RPS", "p50 ms", "p99 ms", "+p50 ms", "CPU ms/req", "RSS MB", "bg")
    table.add_column(columns[0], no_wrap=True, min_width=len(GW_AIOHTTP))
    for column in columns[1:]:
        table.add_column(column, justify="right")
    for r in closed_loop(rows):
        added = "—" if r.added_p50_ms is None or r.target == DIRECT else f"{r.added_p50_ms:+.2f}"
        table.add_row(
            r.target,
            str(r.concurrency),
            f"{r.rps:.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            added,
            f"{r.target_cpu_ms:.3f}",
            f"{r.target_rss_mb:.0f}",
            f"{r.background_cores:.2f}",
        )
    console.print(table)
    for r in open_loop(rows):
        if r.target != DIRECT:
            console.print(
                f"open loop {r.rate:g}/s: {r.target} adds p50 {r.added_p50_ms:+.2f} ms, "
                f"p99 {r.added_p99_ms:+.2f} ms; CPU {r.target_cpu_ms:.3f} ms/req"
            )
    cpu = {(r.target, r.concurrency): r.target_cpu_ms for r in closed_loop(rows)}
    for conc in sorted({c for _, c in cpu}):
        aio, hx, floor = (cpu.get((t, conc)) for t in (GW_AIOHTTP, GW_HTTPX, MINIMAL))
        if aio and hx and floor:
            console.print(
                f"c={conc}: CPU ms/req gateway-aiohttp {aio:.3f}, gateway-httpx {hx:.3f} "
                f"({hx / aio:.2f}x), minimal-proxy {floor:.3f} (gateway = {aio / floor:.1f}x floor)"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM becomes SystemExit so every `finally` below stops the child processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    # Piped output (make, CI logs) gets room for the tables instead of rich's 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 120)
    failed = 0
    if "overhead" in args.scenarios:
        failed |= run_overhead(args, console)
    real_scenarios = set(args.scenarios) & set(real.SCENARIOS)
    if real_scenarios:
        failed |= real.run(args, real_scenarios, console)
    if routing.SCENARIO in args.scenarios:
        # Its own two engines: started after the single-engine stack has stopped.
        failed |= routing.run(args, console)
    if "quantization" in args.scenarios:
        failed |= quantization.run(args, console)
    return failed


def run_overhead(args: argparse.Namespace, console: Console) -> int:
    """The gateway-overhead scenario; 0 if every request succeeded."""
    log_dir = args.out / "logs"
    machine = describe(REPO)
    started = time.monotonic()
    prefix = f"bench-overhead-{uuid.uuid4().hex[:8]}"
    upstream, proxies = build_services(log_dir, args.stream_gap_ms, prefix)
    try:
        with running([upstream, *proxies.values()], console):
            plan = build_plan(args, upstream, proxies)
            console.print(
                f"{len(plan)} points, {args.rounds} interleaved rounds, logs in {log_dir}; "
                f"nproc={machine['nproc']}"
            )
            points = drive(plan, log_dir, console)
    finally:
        real.delete_namespace(prefix)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    config = {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": list(CLOSED_TARGETS),
        "stream_chunks": STREAM_CHUNKS,
        "wall_s": time.monotonic() - started,
    }
    config["background_mean"], config["background_max"] = background_cores(points)
    rows = summarize(points, CLOSED_TARGETS)
    md_path, json_path = report.write(args.out, machine, config, rows, points)
    subtitle = f"nproc {machine['nproc']}, Python {machine['python']}, {machine['date_utc']}"
    png_path = plot.write(rows, args.out / "gateway_overhead.png", subtitle)
    print_summary(console, rows)
    console.print(f"wrote {md_path}, {json_path}, {png_path} in {config['wall_s']:.0f} s")
    failed = sum(r.errors for r in rows)
    if failed:
        console.print(f"[red]{failed} requests failed[/red]; see the error samples in the JSON")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
