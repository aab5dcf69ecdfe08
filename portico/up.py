"""``portico up``: the engines and one gateway on this machine, supervised together.

The chat engine starts first, then the bundled embedding model's engine (unless turned
off), and the gateway only once both answer, routing to both by model; Ctrl-C (or
SIGTERM) stops them all, the gateway first. What ``make run`` runs.

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
from engine.settings import BUNDLED_EMBEDDING_MODEL, EngineSettings
from portico.gateway import gateway_argv
from portico.settings import CliSettings

GATEWAY_READY_TIMEOUT_S = 60.0
EMBEDDING_PORT = 8001
_ROLES = {"engine": "chat and completions", "embedding engine": "embeddings"}
# What describes the chat model rather than the machine: reset for the embedding engine.
_MODEL_FIELDS = (
    "served_model_name", "revision", "quantization", "max_model_len", "max_num_seqs",
    "max_num_queued_reqs", "enable_prefix_caching", "runner", "tool_call_parser",
    "chat_template", "extra_args",
)  # fmt: skip


def embedding_engine(chat: EngineSettings, port: int) -> EngineSettings:
    """The bundled embedding model's engine next to ``chat``: the same machine settings
    (device, dtype, eager start, caches, offline, timeouts), none of the chat model's."""
    defaults = {
        name: EngineSettings.model_fields[name].get_default(call_default_factory=True)
        for name in _MODEL_FIELDS
    }
    return chat.model_copy(update={**defaults, "model": BUNDLED_EMBEDDING_MODEL, "port": port})


def gateway_env(engines: list[EngineSettings], settings: CliSettings) -> dict[str, str]:
    """What the gateway child gets on top of this environment: the engines' URLs, and a
    fresh random key per run when ``PORTICO_API_KEYS`` is unset (no default secret)."""
    env = {"PORTICO_ENGINES": ",".join(engine.base_url for engine in engines)}
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


def _start_engines(
    engines: list[tuple[str, EngineSettings]], console: Console, requested: threading.Event
) -> list[ManagedProcess]:
    """Each engine in turn (two starting at once would share two cores); a failure
    stops those already up."""
    started: list[ManagedProcess] = []
    try:
        for name, engine in engines:
            command = launcher.plan(engine)
            started.append(launcher.start(engine, command, requested, console, name))
    except BaseException:
        for process in reversed(started):
            process.stop(engines[0][1].kill_after_s)
        raise
    return started


def up(
    engine: EngineSettings,
    host: str,
    port: int,
    settings: CliSettings,
    console: Console,
    embeddings: EngineSettings | None = None,
) -> int:
    """Start the engines and the gateway, print the base URL and key, supervise; returns
    the exit code. ``embeddings``: the embedding engine's settings, None for none."""
    engines = [("engine", engine)] + ([("embedding engine", embeddings)] if embeddings else [])
    for (name, each), flag in zip(engines, ("--port", "--embedding-port"), strict=False):
        launcher.require_free_port(each.host, each.port, name, flag)
    launcher.require_free_port(host, port, "gateway", "--gateway-port")
    launcher.require_disk_space(engine.cache_dir)
    env = gateway_env([each for _, each in engines], settings)
    gateway_url = f"http://{host}:{port}"
    with stop_requests() as requested:
        processes = _start_engines(engines, console, requested)
        try:
            processes.append(_start_gateway(gateway_url, port, env, console, requested))
        except StartupError:
            for process in reversed(processes):
                process.stop(engine.kill_after_s)
            raise
        print(f"\nPortico is ready.\n{gateway_url}/v1", flush=True)
        for name, each in engines:
            print(f"Model: {', '.join(launcher.served_models(each.base_url))} ({_ROLES[name]})")
        shown = env.get("PORTICO_API_KEYS", "(the first of PORTICO_API_KEYS)")
        print(f"API key: {shown}\nPress Ctrl-C to stop.", flush=True)
        code = supervise(processes, requested, engine.kill_after_s)
        if not requested.is_set():
            logs = ", ".join(f"{p.name}: {p.log_path}" for p in processes)
            print(f"portico: error: a process exited on its own (code {code}); logs: {logs}",
                  file=console.out, flush=True)  # fmt: skip
        return code
