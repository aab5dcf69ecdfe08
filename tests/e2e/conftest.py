"""One real stack per test session: ``portico up`` starts the vLLM CPU engine
with the bundled model and the gateway as separate processes, exactly as
``make run`` does; the tests then talk to the printed base URL with the
printed key. Teardown sends SIGINT (Ctrl-C) and checks a clean exit.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.gateway.processes import gateway_env, gateways

MODEL = "SmolLM2-135M-Instruct"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
STARTUP_TIMEOUT_S = 900  # first run converts the bundled model (~40 s) before vLLM starts
LOG_DIR = Path(
    os.environ.get("PORTICO_TEST_LOGS", Path(__file__).parents[2] / "build" / "test-logs")
)


@dataclass(frozen=True)
class Stack:
    base_url: str  # the gateway's OpenAI base URL, .../v1
    api_key: str
    engine_url: str  # vLLM itself, for checking what reached it
    gateway_url: str
    startup_s: float
    embedding_url: str | None = None  # the embedding model's vLLM, when one was started

    def engine_metric(self, name: str, **labels: str) -> float:
        """Sum of a vLLM Prometheus sample over the series matching ``labels``."""
        text = httpx.get(f"{self.engine_url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def engine_generation_requests(self) -> float:
        """HTTP requests that reached vLLM's two generation routes, any status."""
        return self.engine_metric(
            "http_requests_total", handler="/v1/completions"
        ) + self.engine_metric("http_requests_total", handler="/v1/chat/completions")


def _read_lines(stream: object, lines: queue.Queue[str]) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        lines.put(raw.decode(errors="replace").rstrip("\n"))


@contextmanager
def running_stack(
    *engine_args: str,
    log_name: str = "stack",
    embeddings: bool = False,
    engine_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """``portico up`` with ``engine_args`` added; yields once every process is ready.
    ``embeddings``: the bundled embedding engine too, as ``make run`` starts it.
    ``engine_env``: added to the environment the engines inherit.

    Its stderr (the engine's and the gateway's output) goes to
    ``LOG_DIR/<log_name>.log``, where tests can look for what vLLM reported.
    """
    engine_port, gateway_port, embedding_port = free_port(), free_port(), free_port()
    if embeddings:
        engine_args = (*engine_args, "--embedding-port", str(embedding_port))
    else:
        engine_args = (*engine_args, "--no-embeddings")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = (LOG_DIR / f"{log_name}.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "portico",
            "up",
            "--port",
            str(engine_port),
            "--gateway-port",
            str(gateway_port),
            "--enforce-eager",
            "--max-model-len",
            "4096",
            # vLLM's lines in this stderr log (tests read it), and its log file beside it.
            "--verbose",
            "--log-dir",
            str(LOG_DIR),
            *engine_args,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        env={
            **{k: v for k, v in os.environ.items() if k != "PORTICO_API_KEYS"},
            **(engine_env or {}),
        },
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    base_url = key = None
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while key is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(
                f"portico up did not start (exit {proc.poll()}); see {LOG_DIR}/{log_name}.log"
            )
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", line):
            base_url = line
        elif line.startswith("API key: "):
            key = line.removeprefix("API key: ")
    assert base_url == f"http://127.0.0.1:{gateway_port}/v1"
    stack = Stack(
        base_url=base_url,
        api_key=key,
        engine_url=f"http://127.0.0.1:{engine_port}",
        gateway_url=f"http://127.0.0.1:{gateway_port}",
        startup_s=time.monotonic() - started,
        embedding_url=f"http://127.0.0.1:{embedding_port}" if embeddings else None,
    )
    try:
        yield stack
    finally:
        # Ctrl-C, as a user of `make run` would: both processes stop, exit code 0.
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        log.close()
        assert code == 0, f"portico up exited {code} after SIGINT; see {LOG_DIR}/{log_name}.log"
        for url in (stack.engine_url, stack.gateway_url, stack.embedding_url):
            if url is None:
                continue
            with pytest.raises(httpx.ConnectError):
                httpx.get(url + "/health", timeout=2)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    # vLLM's own response store, for direct calls only (tests/e2e/test_responses.py
    # compares follow-ups with it); Portico sends store=false and keeps its own.
    store = {"VLLM_ENABLE_RESPONSES_API_STORE": "1"}
    with running_stack(embeddings=True, engine_env=store) as stack:
        (LOG_DIR / "startup_seconds.txt").write_text(f"{stack.startup_s:.1f}\n")
        yield stack


ADMIN = "e2e-admin-token-0123456789abcdef"


@pytest.fixture(scope="session")
def redis_gateway(stack: Stack) -> Iterator[str]:
    """A second gateway in front of the same engine, the production way: keys,
    limits, usage and cache in the real Redis (a fresh namespace), admin token set."""
    env = gateway_env(
        PORTICO_ENGINES=f"{stack.engine_url},{stack.embedding_url}",
        PORTICO_REDIS_URL="redis://127.0.0.1:6379/0",
        PORTICO_ADMIN_TOKEN=ADMIN,
        PORTICO_REDIS__PREFIX=f"e2e-{uuid.uuid4().hex[:8]}",
    )
    with gateways(1, env, LOG_DIR) as urls:
        yield urls[0]
