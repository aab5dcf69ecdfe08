"""`make bench`: Portico's benchmarks. ``--scenarios`` picks some (default: all).

- ``overhead``: the gateway's own overhead, against a fake upstream (bench.overhead).
- ``cache`` and ``engine``: on the real vLLM CPU engine, started once for both
  (bench.core.stack, bench.cache, bench.engine).
- ``routing``: round-robin vs prefix affinity over two real engines (bench.routing).
- ``embeddings``: the bundled embedding model direct vs through the gateway
  (bench.embeddings).
- ``quantization``: the bundled model against its GPTQ W4A8 quantization
  (``portico model compare``, bench.quantization).

Each writes ``<name>.{md,json,png}`` under ``--out`` (default bench/results). See
bench/README.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from bench import quantization
from bench.cache import scenario as cache
from bench.core.procs import REPO
from bench.core.stack import real_stack
from bench.embeddings import scenario as embeddings
from bench.engine import scenario as engine
from bench.overhead import scenario as overhead
from bench.routing import scenario as routing

SCENARIOS = ("overhead", "cache", "engine", "routing", "embeddings", "quantization")


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
        prog="python -m bench",
        description="Portico's benchmarks: the gateway's own overhead (fake upstream), "
        "the response cache and the engine through the gateway (real vLLM CPU engine), "
        "round-robin vs prefix-affinity routing (two real engines), embeddings, quantization.",
    )
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=list(SCENARIOS),
        help=f"comma-separated, any of {','.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (numbers useless)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--engine-startup-timeout", type=float, default=900.0)
    for scenario in (overhead, cache, engine, routing, embeddings, quantization):
        scenario.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        for scenario in (overhead, cache, engine, routing, embeddings):
            scenario.apply_quick(args)
    return args


def run_real(args: argparse.Namespace, console: Console) -> int:
    """``cache`` and ``engine`` on one engine and gateway, started once for both."""
    started, failed = time.monotonic(), 0
    with real_stack(args, console) as stack:
        if "cache" in args.scenarios:
            failed |= cache.run(args, stack, console)
        if "engine" in args.scenarios:
            failed |= engine.run(args, stack, console)
    console.print(f"real-engine scenarios done in {time.monotonic() - started:.0f} s")
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM becomes SystemExit so every `finally` stops the child processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    # Piped output (make, CI logs) gets room for the tables instead of rich's 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 120)
    failed = 0
    if "overhead" in args.scenarios:
        failed |= overhead.run(args, console)
    if {"cache", "engine"} & set(args.scenarios):
        failed |= run_real(args, console)
    if "routing" in args.scenarios:  # its own two engines, once the single engine stopped
        failed |= routing.run(args, console)
    if "embeddings" in args.scenarios:
        failed |= embeddings.run(args, console)
    if "quantization" in args.scenarios:
        failed |= quantization.run(args, console)
    return failed


if __name__ == "__main__":
    sys.exit(main())
