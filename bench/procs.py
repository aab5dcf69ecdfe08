"""Starting, probing and always stopping the benchmark's server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


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
    cwd: Path | None = None
    ready_timeout_s: float = 60.0
    stop_timeout_s: float = 5.0  # grace period between SIGTERM and SIGKILL
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

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
        self._log = self.log_path.open("wb")
        # Inherited PORTICO_* settings would silently change what is measured.
        base = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
        self.process = subprocess.Popen(
            list(self.argv),
            env={**base, **self.env},
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Poll ``ready_path`` until it answers 200; fail fast if the process died."""
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        url = self.base_url + self.ready_path
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (http only)
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready at {url} after {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate, wait ``stop_timeout_s``, then kill. Safe to call twice or before start."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


REPO = Path(__file__).resolve().parent.parent
# The launcher forwards SIGTERM and gives vLLM 30 s before it kills it.
ENGINE_STOP_S = 45.0


def fake_upstream_service(log_path: Path, stream_gap_ms: float = 0.0) -> Service:
    """bench/fake_upstream.py: an OpenAI-compatible upstream that answers at once."""
    port = free_port()
    argv = [sys.executable, str(REPO / "bench" / "fake_upstream.py"), "--port", str(port)]
    argv += ["--stream-gap-ms", str(stream_gap_ms)]
    return Service("fake-upstream", argv, port, "/health", log_path)


def engine_service(
    name: str,
    log_path: Path,
    flags: Sequence[str],
    ready_timeout_s: float,
    env: Mapping[str, str] | None = None,
) -> Service:
    """A vLLM engine as a user starts one: ``portico engine serve`` with ``flags``."""
    port = free_port()
    return Service(
        name=name,
        argv=[sys.executable, "-m", "portico", "engine", "serve", "--port", str(port), *flags],
        port=port,
        ready_path="/health",
        log_path=log_path,
        env=dict(env or {}),
        cwd=REPO,
        ready_timeout_s=ready_timeout_s,
        stop_timeout_s=ENGINE_STOP_S,
    )


def gateway_service(name: str, log_path: Path, env: Mapping[str, str], workers: int = 1) -> Service:
    """A gateway as in production: ``uvicorn --factory`` (one worker), or
    ``portico gateway serve --workers N``, configured by ``env`` alone."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app"]
    argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    if workers > 1:  # the CLI sets up shared metrics, then execs uvicorn
        argv = [sys.executable, "-m", "portico", "gateway", "serve", "--port", str(port)]
        argv += ["--workers", str(workers)]
    return Service(
        name=name,
        argv=argv,
        port=port,
        ready_path="/readyz",
        log_path=log_path,
        env=dict(env),
        cwd=REPO,
    )
