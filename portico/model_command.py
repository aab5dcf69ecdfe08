"""``portico model quantize|compare``: the model tooling's command line.

The work is the :mod:`modeltools` package, imported when one of these runs (llm-compressor,
torch and matplotlib only inside it), so ``portico up`` never loads any of it. ``quantize``
checks its request here, then, unless llm-compressor is importable in this interpreter,
runs itself again inside the toolchain venv (:mod:`modeltools.toolchain`), built on first
use, with the hidden ``--in-toolchain`` flag so it does not try a third time.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.main import add_engine_flags, settings_from
from portico.settings import CliSettings

if TYPE_CHECKING:
    from modeltools.quantize import Request


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``quantize`` and ``compare`` under ``portico model``, each with every engine flag."""
    actions = parser.add_subparsers(dest="action", required=True)
    quant = actions.add_parser("quantize", help="4-bit weights with llm-compressor (GPTQ/AWQ)")
    quant.add_argument("--method", required=True, help="gptq or awq")
    quant.add_argument(
        "--scheme", required=True, help="W4A16 (GPU, AVX-512 CPU) or W4A8 (any x86 CPU)"
    )
    quant.add_argument("--output", type=Path, required=True, help="new checkpoint directory")
    quant.add_argument(
        "--calibration", type=Path, help="JSONL with 'text' or one sample per line; "
        "default: the set shipped in modeltools/data"
    )  # fmt: skip
    quant.add_argument("--samples", type=int, default=128, help="calibration samples used")
    quant.add_argument("--max-seq-length", type=int, default=512, help="tokens per sample")
    quant.add_argument("--in-toolchain", action="store_true", help=argparse.SUPPRESS)
    compare_parser = actions.add_parser("compare", help="report on a base and a quantized model")
    compare_parser.add_argument("base", help="'bundled' or a checkpoint directory")
    compare_parser.add_argument("quantized", nargs="+", help="quantized checkpoint directories")
    compare_parser.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="where quantization.md/png go"
    )
    for sub in (quant, compare_parser):
        add_engine_flags(sub)
        sub.set_defaults(handler=run)


def _request(args: argparse.Namespace, model: str) -> Request:
    from modeltools import quantize

    return quantize.Request(
        model=model,
        method=args.method,
        scheme=args.scheme,
        output=args.output,
        calibration=args.calibration,
        samples=args.samples,
        max_seq_length=args.max_seq_length,
    )


def run(args: argparse.Namespace, settings: CliSettings) -> int:
    """Quantize (prints the new checkpoint's directory) or compare (prints the report)."""
    engine = settings_from(args)
    if args.action == "quantize":
        from modeltools import quantize, toolchain

        request = _request(args, engine.model)
        if args.in_toolchain or quantize.has_toolchain():
            print(quantize.quantize(request, engine))
            return 0
        quantize.check(request, engine)  # a refusal costs no toolchain build
        built = toolchain.ensure(toolchain.for_quantize(settings.toolchain_root()))
        return toolchain.run(built, [*_argv(args), "--in-toolchain"])
    from modeltools import compare, compare_report

    reports = compare.measure_all(args.base, args.quantized, engine)
    print(compare_report.write(reports, args.out, engine))
    return 0


def _argv(args: argparse.Namespace) -> Sequence[str]:
    """The command line as given (:func:`portico.cli.main` keeps it on ``args``)."""
    argv: Sequence[str] = args.argv
    return argv
