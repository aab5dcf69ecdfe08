"""``portico loadtest``: the flags of the concurrency sweep, and the config they make.

The sweep itself is the :mod:`loadtest` package; this module only turns a command line
(and the ``OPENAI_API_KEY`` default from :class:`CliSettings`) into a
:class:`loadtest.sweep.LoadTestConfig`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadtest import report
from loadtest.errors import LoadTestError
from loadtest.sweep import DEFAULT_PROMPT, LoadTestConfig, levels, normalize_base_url
from portico.settings import CliSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        required=True,
        help="OpenAI base URL, e.g. http://host:8080/v1 (a bare host gets /v1)",
    )
    parser.add_argument("--model", required=True, help="model name the deployment serves")
    parser.add_argument(
        "--api-key", default=None, help="bearer key (default: $OPENAI_API_KEY; none: no header)"
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4, 16, 64],
        help="levels to sweep (closed loop)",
    )  # fmt: skip
    parser.add_argument(
        "--requests", type=int, default=None,
        help="requests per level (default: 2 x concurrency, at least 8)",
    )  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=128)
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default=DEFAULT_PROMPT)
    prompt.add_argument("--prompt-file", default=None, help="read the prompt from a file")
    api = parser.add_mutually_exclusive_group()
    api.add_argument(
        "--chat", dest="api", action="store_const", const="chat", help="/chat/completions (default)"
    )
    api.add_argument(
        "--completions", dest="api", action="store_const", const="completions", help="/completions"
    )
    parser.add_argument(
        "--ignore-eos", action="store_true", help="vLLM: always generate --max-tokens tokens"
    )
    parser.add_argument(
        "--ttft-slo-ms", type=float, default=None,
        help="report the highest level whose TTFT p99 stays under this",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds per request, whole stream included"
    )
    parser.add_argument(
        "--out", default="portico-loadtest",
        help="directory for loadtest.json, loadtest.md, loadtest.png",
    )  # fmt: skip
    parser.set_defaults(api="chat")


def config_from(args: argparse.Namespace, settings: CliSettings) -> LoadTestConfig:
    """The validated sweep; raises LoadTestError naming the flag at fault."""
    prompt: str = args.prompt
    if args.prompt_file is not None:
        try:
            prompt = Path(args.prompt_file).read_text()
        except OSError as exc:
            raise LoadTestError(f"cannot read --prompt-file: {exc}") from exc
    default_key = settings.openai_api_key and settings.openai_api_key.get_secret_value()
    return LoadTestConfig(
        base_url=normalize_base_url(args.base_url),
        model=args.model,
        api_key=args.api_key or default_key or None,
        concurrency=levels(args.concurrency),
        requests=args.requests,
        max_tokens=args.max_tokens,
        prompt=prompt,
        api=args.api,
        timeout_s=args.timeout,
        ttft_slo_ms=args.ttft_slo_ms,
        ignore_eos=args.ignore_eos,
    )


def run(args: argparse.Namespace, settings: CliSettings) -> int:
    """Sweep, print, write; 1 if any request failed, 130 on Ctrl-C."""
    config = config_from(args, settings)
    try:
        return report.run(config, Path(args.out))
    except KeyboardInterrupt:
        print("portico: loadtest interrupted", file=sys.stderr)
        return 130
