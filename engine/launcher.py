"""``portico engine serve``: prepare, validate, start vLLM, wait, supervise.

Also what ``portico up`` uses for the engine it starts: the readiness probe, the checks
that fail fast before anything starts (a port in use, a full disk), and the quiet start
(:class:`Console`: vLLM's log to a file, one progress line instead).
"""

from __future__ import annotations

import errno
import shlex
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx

from engine import hardware, model
from engine.command import Command, build_command, resolve_device, validate
from engine.errors import ConfigurationError, StartupError
from engine.process import ManagedProcess, stop_requests, supervise
from engine.progress import StartupLog, StatusLine
from engine.settings import EngineSettings

_PROBE_TIMEOUT_S = 2.0
# The bundled model converted (~270 MB), vLLM's compile cache and the logs, with room.
MIN_FREE_BYTES = 1 << 30


@dataclass(frozen=True)
class Console:
    """How a start-up talks to a person: logs in ``log_dir`` (each run its own files),
    a status line on ``out``, or every line streamed there when ``verbose``."""

    log_dir: Path
    verbose: bool
    out: TextIO
    stamp: str  # names this run's log files: engine-<stamp>.log, gateway-<stamp>.log

    def log(self, name: str) -> StartupLog:
        return StartupLog(
            name, self.log_dir / f"{name}-{self.stamp}.log", self.out if self.verbose else None
        )


def require_free_port(host: str, port: int, what: str, flag: str) -> None:
    """Refuse a port something already listens on, before minutes of model loading."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ConfigurationError(
                f"port {port} on {host} is in use, so the {what} cannot listen there: "
                f"stop what uses it or pass {flag} with another port."
            ) from exc


def require_disk_space(directory: Path, needed: int = MIN_FREE_BYTES) -> None:
    """Refuse to start with less than ``needed`` bytes free where the model and logs go."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise ConfigurationError(
            f"no disk space: {free / 2**20:.0f} MiB free in {directory}, "
            f"{needed / 2**20:.0f} MiB needed (the converted model, vLLM's caches, the logs)."
        )


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


def served_models(base_url: str) -> list[str]:
    """The model ids a ready engine lists."""
    listing = httpx.get(f"{base_url}/v1/models", timeout=_PROBE_TIMEOUT_S).json()
    return [str(card.get("id")) for card in listing.get("data", [])]


def start(
    settings: EngineSettings,
    command: Command,
    cancel: threading.Event | None = None,
    console: Console | None = None,
    name: str = "engine",
) -> ManagedProcess:
    """Start vLLM and block until it is ready. Raises StartupError. ``name`` tells this
    engine from others in messages and names its log file.

    Without ``console`` vLLM's output is echoed as it comes (``portico engine serve``);
    with one it goes to a log file and a status line says how long and which phase.
    """
    if console is None:
        print(f"portico: starting vLLM: {shlex.join(command.argv)}", file=sys.stderr, flush=True)
        process = ManagedProcess("engine", command.argv, command.env)
        began = time.monotonic()
        process.start()
        process.wait_ready(lambda: is_ready(settings.base_url), settings.startup_timeout_s, cancel)
        seconds = time.monotonic() - began
        print(f"portico: engine ready at {settings.base_url} in {seconds:.1f} s", file=sys.stderr)
        return process
    return _start_quietly(settings, command, console, cancel, name)


def _start_quietly(
    settings: EngineSettings,
    command: Command,
    console: Console,
    cancel: threading.Event | None,
    name: str,
) -> ManagedProcess:
    log = console.log(name.replace(" ", "-"))
    log.header(shlex.join(command.argv))
    print(f"portico: starting the {name} (vLLM); its log: {log.path}", file=console.out, flush=True)
    process = ManagedProcess(name, command.argv, command.env, sink=log, log_path=log.path)
    status = StatusLine(f"portico: {name} starting", console.out)
    process.start()
    try:
        seconds = process.wait_ready(
            lambda: is_ready(settings.base_url),
            settings.startup_timeout_s,
            cancel,
            on_wait=None if console.verbose else lambda s: status.update(s, log.phase),
        )
    except StartupError:
        status.clear()
        raise
    status.finish(f"portico: {name} ready at {settings.base_url} in {seconds:.0f} s")
    return process


def serve(settings: EngineSettings) -> int:
    """Run one engine until SIGINT/SIGTERM or until it exits; return its exit code."""
    require_free_port(settings.host, settings.port, "engine", "--port")
    command = plan(settings)
    with stop_requests() as requested:
        process = start(settings, command, requested)
        return supervise([process], requested, settings.kill_after_s)
