"""Starting, probing and always stopping the benchmark's server processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
# The launcher forwards SIGTERM and gives vLLM 30 s before it kills it.
ENGINE_STOP_S = 45.0


def free_port() -> int:
    """A port the kernel considers free right now (tiny race; fine on a bench box)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    """One server process: its command line, where it listens, how to tell it is ready."""

    name: str
    argv: Sequence[str]
    port: int
    ready_path: str
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 60.0
    stop_timeout_s: float = 5.0  # grace period between SIGTERM and SIGKILL
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("wb")
        # Inherited PORTICO_* settings would silently change what is measured.
        base = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
        self.process = subprocess.Popen(
            list(self.argv),
            env={**base, **self.env},
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        """Poll ``ready_path`` until it answers 200; fail fast if the process died."""
        deadline = time.monotonic() + self.ready_timeout_s
        url = self.base_url + self.ready_path
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"{self.name} exited with {code}; log:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (http only)
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready at {url}:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate, wait ``stop_timeout_s``, then kill. Safe to call twice or before start."""
        process, self.process = self.process, None
        if process is not None:
            stop(process, self.stop_timeout_s)
        if self.log is not None:
            self.log.close()
            self.log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop(process: subprocess.Popen[Any], grace_s: float) -> None:
    """Terminate ``process`` if it still runs, wait ``grace_s``, then kill it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def fetch(url: str, body: object = None, headers: dict[str, str] | None = None) -> bytes:
    """GET ``url``, or POST ``body`` as JSON to it (http on 127.0.0.1 only)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data, headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        found: bytes = response.read()
        return found


@contextmanager
def running(services: Sequence[Service]) -> Iterator[None]:
    """Start all, then wait until each is ready; stop all on the way out, whatever happens."""
    with ExitStack() as stack:
        for service in services:
            stack.callback(service.stop)
            service.start()
        for service in services:
            service.wait_ready()
        yield


def _module(name: str, module: str, log_path: Path, *args: str, ready: str = "/health") -> Service:
    """``python -m module --port P *args``."""
    port = free_port()
    argv = [sys.executable, "-m", module, "--port", str(port), *args]
    return Service(name, argv, port, ready, log_path)


def fake_upstream_service(log_path: Path, stream_gap_ms: float = 0.0) -> Service:
    """bench.overhead.fake_upstream: an OpenAI-compatible upstream that answers at once."""
    gap = ("--stream-gap-ms", str(stream_gap_ms))
    return _module("fake-upstream", "bench.overhead.fake_upstream", log_path, *gap)


def minimal_proxy_service(name: str, log_path: Path, upstream: str) -> Service:
    """bench.overhead.minimal_proxy: raw ASGI + aiohttp forwarding bytes to ``upstream``."""
    return _module(name, "bench.overhead.minimal_proxy", log_path, "--upstream", upstream)


def engine_service(
    name: str,
    log_path: Path,
    flags: Sequence[str],
    ready_timeout_s: float,
    env: Mapping[str, str] | None = None,
) -> Service:
    """A vLLM engine as a user starts one: ``portico engine serve`` with ``flags``."""
    service = _module(name, "portico", log_path, *flags)
    service.argv = [sys.executable, "-m", "portico", "engine", "serve", *service.argv[3:]]
    service.env, service.ready_timeout_s = dict(env or {}), ready_timeout_s
    service.stop_timeout_s = ENGINE_STOP_S
    return service


def gateway_service(name: str, log_path: Path, env: Mapping[str, str], workers: int = 1) -> Service:
    """A gateway as in production: ``uvicorn --factory`` (one worker), or
    ``portico gateway serve --workers N``, configured by ``env`` alone."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app"]
    argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    if workers > 1:  # the CLI sets up shared metrics, then execs uvicorn
        argv = [sys.executable, "-m", "portico", "gateway", "serve", "--port", str(port)]
        argv += ["--workers", str(workers)]
    return Service(name, argv, port, "/readyz", log_path, dict(env))
