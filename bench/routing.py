"""The ``routing`` scenario: round-robin vs prefix-affinity over two real vLLM CPU engines.

Starts two engines once (A with vLLM's default thread binding, core 0 here; B with
``VLLM_CPU_OMP_THREADS_BIND=1``, so each computes on its own core as two hosts would)
and one gateway per strategy in front of both, with the response cache off. Then
interleaved rounds of a shared-prefix workload (8 system prompts of ~500 tokens, short
questions; see routing_workload.py), driven by routing_load.py, and writes
bench/results/routing.{md,json,png}. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import real_plot
import routing_report
from machine import describe
from procs import Service, free_port
from real import API_KEY, ENGINE_FLAGS, EXTRA_PACKAGES, REPO, _first_model, drive
from real_report import write
from rich.console import Console
from routing_report import STRATEGIES
from routing_workload import schedule

SCENARIO = "routing"
# Engine B's extra environment: the e2e routing test's way to give it core 1.
ENGINE_ENVS = {"a": {}, "b": {"VLLM_CPU_OMP_THREADS_BIND": "1"}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("routing scenario (two real engines)")
    group.add_argument(
        "--routing-rounds", type=int, default=3, help="round pairs (one round per strategy)"
    )
    group.add_argument("--routing-requests", type=int, default=40, help="per round")
    group.add_argument("--routing-concurrency", type=int, nargs="+", default=[8])
    group.add_argument("--routing-max-tokens", type=int, default=16)


def apply_quick(args: argparse.Namespace) -> None:
    args.routing_rounds, args.routing_requests, args.routing_concurrency = 1, 8, [4]


@dataclass
class Stack:
    engines: dict[str, Service]
    gateways: dict[str, Service]  # by strategy
    model: str
    startup_s: float


def _engine(name: str, log_dir: Path, timeout_s: float) -> Service:
    port = free_port()
    return Service(
        name=f"engine-{name}",
        argv=[
            sys.executable,
            "-m",
            "engine",
            "engine",
            "serve",
            "--port",
            str(port),
            *ENGINE_FLAGS,
        ],
        port=port,
        ready_path="/health",
        log_path=log_dir / f"routing-engine-{name}.log",
        env=ENGINE_ENVS[name],
        cwd=REPO,
        ready_timeout_s=timeout_s,
        stop_timeout_s=45.0,  # the launcher forwards SIGTERM and gives vLLM 30 s
    )


def _gateway(strategy: str, engines: list[Service], log_dir: Path) -> Service:
    port = free_port()
    return Service(
        name=f"gateway-{strategy}",
        argv=[
            *(sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app"),
            *("--port", str(port), "--no-access-log", "--log-level", "warning"),
        ],
        port=port,
        ready_path="/readyz",
        log_path=log_dir / f"routing-gateway-{strategy}.log",
        env={
            "PORTICO_ENGINES": ",".join(e.base_url for e in engines),
            "PORTICO_API_KEYS": API_KEY,
            "PORTICO_ROUTING__STRATEGY": strategy,
            # Repeated questions must reach an engine: only its prefix cache is compared.
            "PORTICO_CACHE__MODE": "off",
        },
        cwd=REPO,
    )


@contextmanager
def routing_stack(args: argparse.Namespace, log_dir: Path, console: Console) -> Iterator[Stack]:
    """Both engines and both gateways, ready; all stopped on the way out, whatever happens."""
    engines = {name: _engine(name, log_dir, args.engine_startup_timeout) for name in ENGINE_ENVS}
    with ExitStack() as stack:
        started = time.monotonic()
        # Started together: loading is mostly waiting on imports and disk, and this halves
        # the scenario's fixed cost.
        with console.status("starting two vLLM CPU engines (--enforce-eager, about 1-3 min)"):
            for engine in engines.values():
                stack.callback(engine.stop)
                engine.start()
            for engine in engines.values():
                engine.wait_ready()
            deadline = time.monotonic() + 60
            model = _first_model(engines["a"].base_url, deadline)
            _first_model(engines["b"].base_url, deadline)
        startup_s = time.monotonic() - started
        console.print(f"engines ready in {startup_s:.0f} s: {model}")
        gateways = {s: _gateway(s, list(engines.values()), log_dir) for s in STRATEGIES}
        with console.status("starting one gateway per strategy"):
            for gateway in gateways.values():
                stack.callback(gateway.stop)
                gateway.start()
            for gateway in gateways.values():
                gateway.wait_ready()
        yield Stack(engines, gateways, model, startup_s)


def plan(args: argparse.Namespace, stack: Stack) -> list[dict[str, Any]]:
    """Every measured point. Round pairs alternate which strategy goes first (ABBA), so a
    slow drift of the shared machine favours neither; both rounds of a pair send the same
    (persona, question) sequence, each under its own fresh tag."""
    points: list[dict[str, Any]] = []
    for pair in range(args.routing_rounds):
        for conc in args.routing_concurrency:
            order = STRATEGIES if pair % 2 == 0 else STRATEGIES[::-1]
            for strategy in order:
                gateway = stack.gateways[strategy]
                points.append(
                    {
                        "index": len(points),
                        "round": pair,
                        "strategy": strategy,
                        "concurrency": conc,
                        "tag": secrets.token_hex(4),
                        "url": gateway.base_url + "/v1/chat/completions",
                        "gateway_pid": gateway.pid,
                        "schedule": schedule(args.routing_requests, seed=pair),
                    }
                )
    return points


def _warmup(stack: Stack) -> list[dict[str, Any]]:
    return [
        {
            "strategy": strategy,
            "concurrency": 4,
            "tag": f"warmup-{secrets.token_hex(4)}",
            "url": gateway.base_url + "/v1/chat/completions",
            "gateway_pid": gateway.pid,
            "schedule": schedule(8, seed=-1),
        }
        for strategy, gateway in stack.gateways.items()
    ]


def _config(args: argparse.Namespace, stack: Stack, wall_s: float) -> dict[str, Any]:
    argv = ["python", "-m", "engine", "engine", "serve", "--port", "P", *ENGINE_FLAGS]
    return {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "engines": {
            name: {"argv": argv, "env": ENGINE_ENVS[name], "url": e.base_url}
            for name, e in stack.engines.items()
        },
        "model": stack.model,
        "startup_s": stack.startup_s,
        "measured_wall_s": wall_s,
    }


def run(args: argparse.Namespace, console: Console) -> int:
    """The whole scenario, engines included; 0 if every request succeeded."""
    log_dir = args.out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    machine = describe(REPO, EXTRA_PACKAGES)
    started = time.monotonic()
    with routing_stack(args, log_dir, console) as stack:
        points = plan(args, stack)
        job = {
            "model": stack.model,
            "api_key": API_KEY,
            "max_tokens": args.routing_max_tokens,
            "engines": [e.base_url for e in stack.engines.values()],
            "engine_pids": [e.pid for e in stack.engines.values()],
            "warmup": _warmup(stack),
            "points": points,
            "scenario": SCENARIO,
        }

        def label(event: dict[str, Any]) -> str:
            return f"round {event['round'] + 1} c={event['concurrency']} {event['strategy']}"

        total = sum(len(p["schedule"]) for p in points)
        measured = time.monotonic()
        results = drive(
            job, total, log_dir / "routing-load.log", console, label, client="routing_load.py"
        )
        measured_s = time.monotonic() - measured
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    config = _config(args, stack, measured_s)
    config["scenario_wall_s"] = time.monotonic() - started
    summary = routing_report.summarize(results)
    markdown = routing_report.markdown(machine, config, summary)
    payload = {"machine": machine, "config": config, "summary": summary, "points": results}
    md_path, json_path = write(args.out, SCENARIO, markdown, payload)
    subtitle = f"nproc {machine['nproc']}, {machine['date_utc']}; one run, compare ratios"
    png_path = real_plot.routing(summary, args.out / "routing.png", subtitle)
    routing_report.print_summary(console, summary)
    console.print(
        f"wrote {md_path}, {json_path}, {png_path}; scenario {config['scenario_wall_s']:.0f} s"
    )
    if summary["errors"]:
        console.print(f"[red]{summary['errors']} failed requests[/red]: {summary['error_samples']}")
        return 1
    return 0
