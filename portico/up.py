"""``portico up``: one engine and one gateway on this machine, supervised together.

The engine starts first and the gateway only once vLLM answers; Ctrl-C (or SIGTERM) stops
both, the gateway first. What ``make run`` runs.
"""

from __future__ import annotations

import secrets

from engine import launcher
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


def up(engine: EngineSettings, host: str, port: int, settings: CliSettings) -> int:
    """Start both, print the base URL and key, supervise; returns the exit code."""
    command = launcher.plan(engine)
    env = gateway_env(engine, settings)
    gateway_url = f"http://{host}:{port}"
    with stop_requests() as requested:
        engine_process = launcher.start(engine, command, requested)
        gateway = ManagedProcess("gateway", gateway_argv(host, port, 1), env)
        gateway.start()
        gateway.wait_ready(
            lambda: launcher.is_ready_url(gateway_url + "/readyz"),
            GATEWAY_READY_TIMEOUT_S,
            requested,
        )
        print(f"\nPortico is ready.\n{gateway_url}/v1", flush=True)
        shown = env.get("PORTICO_API_KEYS", "(the first of PORTICO_API_KEYS)")
        print(f"API key: {shown}\nPress Ctrl-C to stop.", flush=True)
        return supervise([engine_process, gateway], requested, engine.shutdown_timeout_s)
