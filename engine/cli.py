"""The ``portico`` command.

    portico engine serve [flags]     prepare the model, run vLLM until Ctrl-C
    portico engine prepare [flags]   only prepare the model (convert the bundled one)
    portico engine command [flags]   print the vLLM command line that serve would run
    portico gateway serve [flags]    run the gateway (uvicorn --factory)
    portico up [flags]               engine + gateway together; prints base URL and key
    portico keys create|list|show|revoke   manage API keys through the admin API
    portico bench --base-url URL --model NAME   concurrency sweep against a deployment
    portico model quantize [flags]   4-bit GPTQ/AWQ weights with llm-compressor
    portico model compare BASE QUANT...  size, memory, speed, perplexity, answers side by side

The gateway is started as ``python -m uvicorn --factory gateway.app:create_app``
in a child process: the engine package never imports the gateway.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
import tempfile
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic

from engine import launcher, loadtest, loadtest_report, model, quantize
from engine.errors import EngineError
from engine.process import ManagedProcess, stop_requests, supervise
from engine.settings import EngineSettings

GATEWAY_FACTORY = "gateway.app:create_app"


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per EngineSettings field, so flags and env vars never drift apart."""
    group = parser.add_argument_group("engine (also PORTICO_ENGINE_<NAME>)")
    for name, field in EngineSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = field.description
        if typing.get_origin(field.annotation) is list:
            # "extend": each --extra-args=--flag=value adds to the list; vLLM's flags start
            # with "--", so one occurrence can carry only one of them.
            group.add_argument(
                flag, dest=name, nargs="+", action="extend", default=None, help=help_text
            )
        elif field.annotation in (bool, bool | None):
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            group.add_argument(flag, dest=name, default=None, help=help_text)


def _engine_settings(args: argparse.Namespace) -> EngineSettings:
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in EngineSettings.model_fields
        if getattr(args, name, None) is not None
    }
    return EngineSettings(**overrides)


def _gateway_argv(host: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "--factory", GATEWAY_FACTORY,
        "--host", host, "--port", str(port), "--workers", str(workers),
        "--no-access-log",  # the gateway logs requests itself, without secrets
        # uvicorn would believe X-Forwarded-For from 127.0.0.1; the gateway reads it
        # only from PORTICO_TRUSTED_PROXIES (gateway/proxies.py).
        "--no-proxy-headers",
    ]  # fmt: skip


def _cmd_engine(args: argparse.Namespace) -> int:
    settings = _engine_settings(args)
    if args.action == "prepare":
        print(model.prepare(settings).source)
        return 0
    if args.action == "command":
        command = launcher.plan(settings)
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in command.env.items())
        print((env + " " if env else "") + shlex.join(command.argv))
        return 0
    return launcher.serve(settings)


def _cmd_model(args: argparse.Namespace) -> int:
    settings = _engine_settings(args)
    if args.action == "quantize":
        request = quantize.Request(
            model=settings.model,
            method=args.method,
            scheme=args.scheme,
            output=args.output,
            calibration=args.calibration,
            samples=args.samples,
            max_seq_length=args.max_seq_length,
        )
        print(quantize.quantize(request, settings))
        return 0
    from engine import compare  # imports matplotlib only when asked to

    return compare.main(args.base, args.quantized, args.out, settings)


def _add_model_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    model_parser = commands.add_parser("model", help="quantize a model, compare two models")
    actions = model_parser.add_subparsers(dest="action", required=True)
    quant = actions.add_parser("quantize", help="4-bit weights with llm-compressor (GPTQ/AWQ)")
    quant.add_argument("--method", required=True, help="gptq or awq")
    quant.add_argument(
        "--scheme", required=True, help="W4A16 (GPU, AVX-512 CPU) or W4A8 (any x86 CPU)"
    )
    quant.add_argument("--output", type=Path, required=True, help="new checkpoint directory")
    quant.add_argument(
        "--calibration", type=Path, help="JSONL with 'text' or one sample per line; "
        "default: the set shipped in engine/data"
    )  # fmt: skip
    quant.add_argument("--samples", type=int, default=128, help="calibration samples used")
    quant.add_argument("--max-seq-length", type=int, default=512, help="tokens per sample")
    compare_parser = actions.add_parser("compare", help="report on a base and a quantized model")
    compare_parser.add_argument("base", help="'bundled' or a checkpoint directory")
    compare_parser.add_argument("quantized", nargs="+", help="quantized checkpoint directories")
    compare_parser.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="where quantization.md/png go"
    )
    for sub in (quant, compare_parser):
        _add_engine_flags(sub)
        sub.set_defaults(handler=_cmd_model)


def _cmd_gateway(args: argparse.Namespace) -> int:
    argv = _gateway_argv(args.host, args.port, args.workers)
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers share metrics through files in this directory (prometheus-client
        # reads the variable at import, so it must be set before uvicorn starts).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="portico-metrics-")
    # Replace this process: uvicorn then owns signals and graceful shutdown.
    os.execv(sys.executable, argv)  # noqa: S606 - argv is built above, no shell involved


def _exec_keys(rest: Sequence[str]) -> None:
    # The key commands are an HTTP client of the gateway's admin API; they live
    # in the gateway package and run as their own process (no import from here).
    argv = [sys.executable, "-m", "gateway.keyctl", *rest]
    os.execv(sys.executable, argv)  # noqa: S606 - argv is built above, no shell involved


def _cmd_up(args: argparse.Namespace) -> int:
    settings = _engine_settings(args)
    command = launcher.plan(settings)
    env = {"PORTICO_ENGINE_URL": settings.base_url}
    key = os.environ.get("PORTICO_API_KEYS")
    if not key:
        # A fresh random key per run: no default secret exists anywhere.
        key = "pk-dev-" + secrets.token_urlsafe(24)
        env["PORTICO_API_KEYS"] = key
    gateway_url = f"http://{args.gateway_host}:{args.gateway_port}"
    with stop_requests() as requested:
        engine = launcher.start(settings, command, requested)
        gateway = ManagedProcess(
            "gateway", _gateway_argv(args.gateway_host, args.gateway_port, 1), env
        )
        gateway.start()
        gateway.wait_ready(lambda: launcher.is_ready_url(gateway_url + "/readyz"), 60, requested)
        print(f"\nPortico is ready.\n{gateway_url}/v1", flush=True)
        shown = key if "PORTICO_API_KEYS" in env else "(the first of PORTICO_API_KEYS)"
        print(f"API key: {shown}\nPress Ctrl-C to stop.", flush=True)
        return supervise([engine, gateway], requested, settings.shutdown_timeout_s)


def _cmd_bench(args: argparse.Namespace) -> int:
    prompt = args.prompt
    if args.prompt_file is not None:
        try:
            prompt = Path(args.prompt_file).read_text()
        except OSError as exc:
            raise loadtest.BenchError(f"cannot read --prompt-file: {exc}") from exc
    config = loadtest.BenchConfig(
        base_url=loadtest.normalize_base_url(args.base_url),
        model=args.model,
        # The OpenAI SDK's variable, so a shell set up for the SDK works as is.
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY") or None,
        concurrency=loadtest.levels(args.concurrency),
        requests=args.requests,
        max_tokens=args.max_tokens,
        prompt=prompt,
        api=args.api,
        timeout_s=args.timeout,
        ttft_slo_ms=args.ttft_slo_ms,
        ignore_eos=args.ignore_eos,
    )
    try:
        return loadtest_report.run(config, Path(args.out))
    except KeyboardInterrupt:
        print("portico: bench interrupted", file=sys.stderr)
        return 130


def _add_bench_flags(bench: argparse.ArgumentParser) -> None:
    bench.add_argument(
        "--base-url",
        required=True,
        help="OpenAI base URL, e.g. http://host:8080/v1 (a bare host gets /v1)",
    )
    bench.add_argument("--model", required=True, help="model name the deployment serves")
    bench.add_argument(
        "--api-key", default=None, help="bearer key (default: $OPENAI_API_KEY; none: no header)"
    )
    bench.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 4, 16, 64],
        help="levels to sweep (closed loop)",
    )
    bench.add_argument(
        "--requests",
        type=int,
        default=None,
        help="requests per level (default: 2 x concurrency, at least 8)",
    )
    bench.add_argument("--max-tokens", type=int, default=128)
    prompt = bench.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default=loadtest.DEFAULT_PROMPT)
    prompt.add_argument("--prompt-file", default=None, help="read the prompt from a file")
    api = bench.add_mutually_exclusive_group()
    api.add_argument(
        "--chat", dest="api", action="store_const", const="chat", help="/chat/completions (default)"
    )
    api.add_argument(
        "--completions", dest="api", action="store_const", const="completions", help="/completions"
    )
    bench.add_argument(
        "--ignore-eos", action="store_true", help="vLLM: always generate --max-tokens tokens"
    )
    bench.add_argument(
        "--ttft-slo-ms",
        type=float,
        default=None,
        help="report the highest level whose TTFT p99 stays under this",
    )
    bench.add_argument(
        "--timeout", type=float, default=300.0, help="seconds per request, whole stream included"
    )
    bench.add_argument(
        "--out", default="portico-bench", help="directory for bench.json, bench.md, bench.png"
    )
    bench.set_defaults(handler=_cmd_bench, api="chat")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portico", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    engine = commands.add_parser("engine", help="prepare and run a vLLM engine")
    engine.add_argument("action", choices=["serve", "prepare", "command"])
    _add_engine_flags(engine)
    engine.set_defaults(handler=_cmd_engine)

    gateway = commands.add_parser("gateway", help="run the gateway (settings: PORTICO_*)")
    gateway.add_argument("action", choices=["serve"])
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8080)
    gateway.add_argument("--workers", type=int, default=1)
    gateway.set_defaults(handler=_cmd_gateway)

    # Parsed by gateway.keyctl; listed here so `portico --help` shows it.
    commands.add_parser("keys", help="manage API keys: create|list|show|revoke")

    up = commands.add_parser("up", help="engine and gateway together (what `make run` runs)")
    up.add_argument("--gateway-host", default="127.0.0.1")
    up.add_argument("--gateway-port", type=int, default=8080)
    _add_engine_flags(up)
    up.set_defaults(handler=_cmd_up)

    bench = commands.add_parser("bench", help="concurrency sweep against an OpenAI-compatible URL")
    _add_bench_flags(bench)
    _add_model_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["keys"]:
        _exec_keys(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except pydantic.ValidationError as exc:
        print(f"portico: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"portico: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return code


if __name__ == "__main__":
    sys.exit(main())
