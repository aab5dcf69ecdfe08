"""``portico up``: one engine and one gateway on this machine, supervised together.

The engine starts first and the gateway only once vLLM answers; Ctrl-C (or SIGTERM) stops
both, the gateway first. What ``make run`` runs.

It talks to a person: before anything starts it refuses a port in use or a full disk;
while vLLM starts it shows one status line (elapsed time, phase) and writes vLLM's and the
gateway's output to log files whose paths it prints (``--verbose`` streams them instead);
any failure is one line naming what failed and the log, with a non-zero exit code.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from pathlib import Path

from engine import launcher
from engine.errors import StartupError
from engine.launcher import Console
from engine.process import ManagedProcess, stop_requests, supervise
from engine.settings import EngineSettings
from portico.gateway import gateway_argv
from portico.settings import CliSettings

GATEWAY_READY_TIMEOUT_S = 60.0


def gateway_env(engine: EngineSettings, settings: CliSettings) -> dict[str, str]:
    """What the gateway child gets on top of this environment: the engine's URL, and a
    fresh random key per run when ``PORTICO_API_KEYS`` is unset (no default secret)."""
    env = {"PORTICO_ENGINE_URL": engine.base_url}
    if settings.api_keys is None or not settings.api_keys.get_secret_value():
        env["PORTICO_API_KEYS"] = "pk-dev-" + secrets.token_urlsafe(24)
    return env


def console_for(engine: EngineSettings, log_dir: Path | None, verbose: bool) -> Console:
    """Logs under ``log_dir`` (default: the engine's cache directory's ``logs``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Console(log_dir or engine.cache_dir / "logs", verbose, sys.stderr, stamp)


def _start_gateway(
    url: str, port: int, env: dict[str, str], console: Console, requested: threading.Event
) -> ManagedProcess:
    host = url.removeprefix("http://").rpartition(":")[0]
    log = console.log("gateway")
    gateway = ManagedProcess(
        "gateway", gateway_argv(host, port, 1), env, sink=log, log_path=log.path
    )
    gateway.start()
    gateway.wait_ready(
        lambda: launcher.is_ready_url(url + "/readyz"), GATEWAY_READY_TIMEOUT_S, requested
    )
    print(f"portico: gateway ready; its log: {log.path}", file=console.out, flush=True)
    return gateway


def up(
    engine: EngineSettings, host: str, port: int, settings: CliSettings, console: Console
) -> int:
    """Start both, print the base URL and key, supervise; returns the exit code."""
    launcher.require_free_port(engine.host, engine.port, "engine", "--port")
    launcher.require_free_port(host, port, "gateway", "--gateway-port")
    launcher.require_disk_space(engine.cache_dir)
    command = launcher.plan(engine)
    env = gateway_env(engine, settings)
    gateway_url = f"http://{host}:{port}"
    with stop_requests() as requested:
        engine_process = launcher.start(engine, command, requested, console)
        try:
            gateway = _start_gateway(gateway_url, port, env, console, requested)
        except StartupError:
            engine_process.stop(engine.shutdown_timeout_s)
            raise
        print(f"\nPortico is ready.\n{gateway_url}/v1", flush=True)
        shown = env.get("PORTICO_API_KEYS", "(the first of PORTICO_API_KEYS)")
        print(f"API key: {shown}\nPress Ctrl-C to stop.", flush=True)
        code = supervise([engine_process, gateway], requested, engine.shutdown_timeout_s)
        if not requested.is_set():
            logs = ", ".join(f"{p.name}: {p.log_path}" for p in (engine_process, gateway))
            print(f"portico: error: a process exited on its own (code {code}); logs: {logs}",
                  file=console.out, flush=True)  # fmt: skip
        return code
