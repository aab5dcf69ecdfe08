"""``portico engine serve``: prepare, validate, start vLLM, wait, supervise.

Also the readiness probe ``portico up`` uses for the engine it starts.
"""

from __future__ import annotations

import shlex
import sys
import threading
import time

import httpx

from engine import hardware, model
from engine.command import Command, build_command, resolve_device, validate
from engine.process import ManagedProcess, stop_requests, supervise
from engine.settings import EngineSettings

_PROBE_TIMEOUT_S = 2.0


def plan(settings: EngineSettings) -> Command:
    """Everything before the process starts: model, checks, argv. Raises EngineError."""
    machine = hardware.detect()
    device = resolve_device(settings, machine)
    checkpoint = model.prepare(settings)
    validate(settings, checkpoint, machine, device)
    return build_command(settings, checkpoint, device, machine.vllm_cli)


def is_ready_url(url: str) -> bool:
    """A URL answers 200 (used for the gateway's /readyz)."""
    try:
        return httpx.get(url, timeout=_PROBE_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


def is_ready(base_url: str) -> bool:
    """vLLM is ready when /health answers 200 and /v1/models lists a model."""
    try:
        health = httpx.get(f"{base_url}/health", timeout=_PROBE_TIMEOUT_S)
        if health.status_code != 200:
            return False
        models = httpx.get(f"{base_url}/v1/models", timeout=_PROBE_TIMEOUT_S)
    except httpx.HTTPError:
        return False
    return models.status_code == 200 and bool(models.json().get("data"))


def start(
    settings: EngineSettings, command: Command, cancel: threading.Event | None = None
) -> ManagedProcess:
    """Start vLLM and block until it is ready. Raises StartupError."""
    print(f"portico: starting vLLM: {shlex.join(command.argv)}", file=sys.stderr, flush=True)
    process = ManagedProcess("engine", command.argv, command.env)
    began = time.monotonic()
    process.start()
    process.wait_ready(lambda: is_ready(settings.base_url), settings.startup_timeout_s, cancel)
    print(
        f"portico: engine ready at {settings.base_url} in {time.monotonic() - began:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return process


def serve(settings: EngineSettings) -> int:
    """Run one engine until SIGINT/SIGTERM or until it exits; return its exit code."""
    command = plan(settings)
    with stop_requests() as requested:
        process = start(settings, command, requested)
        return supervise([process], requested, settings.kill_after_s)
