"""``python -m engine serve|prepare|command [flags]``: the launcher's own command line.

    serve     prepare the model, run vLLM until SIGINT/SIGTERM (what the engine image runs)
    prepare   only prepare the model (convert the bundled one); print where it is
    command   print the vLLM command line that serve would run

The ``portico`` command (package ``portico``) offers the same as ``portico engine ...`` and
reuses the pieces here: one flag per :class:`EngineSettings` field, so flags and
``PORTICO_ENGINE_*`` variables never drift apart. This module keeps the engine image
self-contained: it runs the launcher without the product CLI, the gateway or any tool.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import typing
from collections.abc import Sequence
from typing import Any, Literal, get_args

import pydantic

from engine import launcher, model
from engine.errors import EngineError
from engine.settings import EngineSettings

Action = Literal["serve", "prepare", "command"]
ACTIONS: tuple[str, ...] = get_args(Action)


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per EngineSettings field; each defaults to None (unset: the variable or the
    field's default applies)."""
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


def settings_from(args: argparse.Namespace) -> EngineSettings:
    """The flags given, over the ``PORTICO_ENGINE_*`` variables, over the defaults."""
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in EngineSettings.model_fields
        if getattr(args, name, None) is not None
    }
    return EngineSettings(**overrides)


def run(action: str, settings: EngineSettings) -> int:
    """One of :data:`ACTIONS`; returns the exit code. Raises EngineError."""
    if action == "prepare":
        print(model.prepare(settings).source)
        return 0
    if action == "command":
        command = launcher.plan(settings)
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in command.env.items())
        print((env + " " if env else "") + shlex.join(command.argv))
        return 0
    return launcher.serve(settings)


def report(exc: pydantic.ValidationError | EngineError) -> int:
    """Print a refusal as one paragraph for a terminal; returns the exit code."""
    if isinstance(exc, pydantic.ValidationError):
        print(f"portico: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    print(f"portico: error: {exc}", file=sys.stderr)
    return exc.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine", description="Prepare a model and run one vLLM engine."
    )
    parser.add_argument("action", choices=ACTIONS)
    add_engine_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args.action, settings_from(args))
    except (pydantic.ValidationError, EngineError) as exc:
        return report(exc)
