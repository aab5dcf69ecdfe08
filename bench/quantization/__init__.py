"""The ``quantization`` scenario: full precision vs 4-bit on the real engine.

Quantizes the bundled model with GPTQ W4A8 (the scheme this CPU can serve)
into ``bench/results/models/`` unless it is already there, then runs
``portico model compare bundled <that> --enforce-eager``, which writes
bench/results/quantization.{md,png,json}. Both steps are the user's commands,
run as subprocesses, so the benchmark measures exactly what a user gets.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from rich.console import Console

METHOD, SCHEME = "gptq", "W4A8"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("quantization scenario")
    group.add_argument(
        "--quantized-model",
        type=Path,
        default=None,
        help="an existing quantized checkpoint to compare (default: quantize one)",
    )
    group.add_argument("--quantize-samples", type=int, default=128, help="calibration samples")


def run(args: argparse.Namespace, console: Console) -> int:
    """0 when both commands succeed."""
    portico = [sys.executable, "-m", "portico"]
    quantized: Path = args.quantized_model or args.out / "models" / f"smollm2-{METHOD}-{SCHEME}"
    if not (quantized / "config.json").is_file():
        console.print(f"quantizing the bundled model ({METHOD} {SCHEME}) into {quantized}")
        quantize = [
            *portico, "model", "quantize", "--method", METHOD, "--scheme", SCHEME,
            "--samples", str(args.quantize_samples), "--output", str(quantized),
        ]  # fmt: skip
        if subprocess.run(quantize, check=False).returncode != 0:
            return 1
    compare = [
        *portico, "model", "compare", "bundled", str(quantized),
        "--enforce-eager", "--max-model-len", "4096", "--out", str(args.out),
    ]  # fmt: skip
    console.print(f"comparing bundled vs {quantized}")
    return subprocess.run(compare, check=False).returncode
