"""The ``portico`` command.

    portico engine serve [flags]     prepare the model, run vLLM until Ctrl-C
    portico engine prepare [flags]   only prepare the model (convert the bundled one)
    portico engine command [flags]   print the vLLM command line that serve would run
    portico gateway serve [flags]    run the gateway (uvicorn --factory)
    portico up [flags]               engine + gateway together; prints base URL and key
    portico keys create|list|show|revoke   manage API keys through the admin API
    portico loadtest --base-url URL --model NAME   concurrency sweep against a deployment
    portico model quantize [flags]   4-bit GPTQ/AWQ weights with llm-compressor
    portico model compare BASE QUANT...  size, memory, speed, perplexity, answers side by side

Each command's work lives in its own package (:mod:`engine`, :mod:`loadtest`,
:mod:`modeltools`) or module here; this one builds the parser, reads the environment
once (:class:`CliSettings`) and turns the known errors into one line and an exit code.
The gateway runs as ``uvicorn --factory gateway.app:create_app`` in a child process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pydantic

from engine import main as engine_main
from engine.errors import EngineError
from loadtest.errors import LoadTestError
from portico import gateway, keys, loadtest_command, model_command, up
from portico.settings import CliSettings


def _cmd_engine(args: argparse.Namespace, settings: CliSettings) -> int:
    return engine_main.run(args.action, engine_main.settings_from(args))


def _cmd_gateway(args: argparse.Namespace, settings: CliSettings) -> int:
    gateway.serve(args.host, args.port, args.workers, settings)


def _cmd_up(args: argparse.Namespace, settings: CliSettings) -> int:
    engine = engine_main.settings_from(args)
    console = up.console_for(engine, args.log_dir, args.verbose)
    embeddings = None if args.no_embeddings else up.embedding_engine(engine, args.embedding_port)
    return up.up(engine, args.gateway_host, args.gateway_port, settings, console, embeddings)


def _engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=engine_main.ACTIONS)
    engine_main.add_engine_flags(parser)


def _gateway_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["serve"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)


def _up_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway-host", default="127.0.0.1")
    parser.add_argument("--gateway-port", type=int, default=8080)
    parser.add_argument(
        "--embedding-port", type=int, default=up.EMBEDDING_PORT,
        help="port of the bundled embedding model's engine",
    )  # fmt: skip
    parser.add_argument(
        "--no-embeddings", action="store_true",
        help="start no embedding engine (only the chat model is served)",
    )  # fmt: skip
    parser.add_argument(
        "--verbose", action="store_true", help="stream vLLM's and the gateway's output here"
    )
    parser.add_argument(
        "--log-dir", type=Path, help="where the engine and gateway logs go (default: "
        "<cache dir>/logs, one pair of files per run)"
    )  # fmt: skip
    engine_main.add_engine_flags(parser)


Handler = Callable[[argparse.Namespace, CliSettings], int]
# (name, help, flags, handler); `model` sets a handler per action on its own subparsers.
COMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler | None], ...] = (
    ("engine", "prepare and run a vLLM engine", _engine_args, _cmd_engine),
    ("gateway", "run the gateway (settings: PORTICO_*)", _gateway_args, _cmd_gateway),
    ("up", "engine and gateway together (what `make run` runs)", _up_args, _cmd_up),
    ("keys", "manage API keys: create|list|show|revoke", keys.add_arguments, keys.run),
    (
        "loadtest",
        "concurrency sweep against an OpenAI-compatible URL",
        loadtest_command.add_arguments,
        loadtest_command.run,
    ),
    ("model", "quantize a model, compare two models", model_command.add_arguments, None),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portico", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_arguments, handler in COMMANDS:
        command = commands.add_parser(name, help=help_text)
        add_arguments(command)
        if handler is not None:
            command.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Kept for a command that runs itself again elsewhere (`model quantize` in its toolchain).
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code: int = args.handler(args, CliSettings())
    except (pydantic.ValidationError, EngineError) as exc:
        return engine_main.report(exc)
    except LoadTestError as exc:
        print(f"portico: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the machine refused: a full disk, a read-only or missing path
        print(f"portico: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
