"""Real child processes for tests that need more than the test process:
gateways started as production starts them (``uvicorn --factory``), and private
Redis servers a test may pause, kill and restart. Plus reading a gateway's
Prometheus metrics, which tests of either kind check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

ROOT = Path(__file__).parents[2]
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


class Child:
    """One child process writing to its own log file; ``stop`` ends both, always."""

    def __init__(self, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None):
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
            )
        except OSError:
            self._log.close()
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Ask politely (resuming it first, in case a test paused it), then kill."""
        try:
            if self.alive():
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        finally:
            self._log.close()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def gateway_env(**settings: str) -> dict[str, str]:
    """This environment without any Portico or Redis setting, plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("PORTICO_") and k.upper() != "REDIS_URL"
    }
    return {**env, **settings}


def _wait_healthy(child: Child, url: str, deadline: float) -> None:
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not child.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"gateway at {url} did not start:\n{child.log_tail()}")
        time.sleep(0.05)


@contextmanager
def gateways(count: int, env: Mapping[str, str], log_dir: Path) -> Iterator[list[str]]:
    """``count`` gateway processes, started together; yields their base URLs."""
    with ExitStack() as stack:
        started: list[tuple[Child, str]] = []
        for i in range(count):
            port = free_port()
            # As every launcher does: the gateway, not uvicorn, decides which proxies'
            # X-Forwarded-For it believes (PORTICO_TRUSTED_PROXIES).
            argv = [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app"]
            argv += [
                "--no-proxy-headers",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ]
            child = Child(argv, log_dir / f"gateway-{i}.log", env)
            stack.callback(child.stop)
            started.append((child, f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + _START_TIMEOUT_S
        for child, url in started:
            _wait_healthy(child, url, deadline)
        yield [url for _, url in started]


class FakeEngineProcess:
    """tests.gateway.fake_engine as its own process, so a test can SIGKILL it (the
    kernel resets its connections, as when a pod dies) and restart it on the same port."""

    def __init__(self, name: str, log_dir: Path, models: str = "fake-model") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, "FAKE_ENGINE_NAME": name, "FAKE_ENGINE_MODELS": models}
        self._log = log_dir / f"fake-engine-{name}.log"
        self._child: Child | None = None
        self.start()

    def start(self) -> None:
        argv = [sys.executable, "-m", "uvicorn", "--factory", "tests.gateway.fake_engine:from_env"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self._child = Child(argv, self._log, self._env)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if not self._child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"fake engine did not start:\n{self._child.log_tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self._child is not None:
            self._child.stop(signal.SIGKILL)
            self._child = None

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None


class RedisServer:
    """A private ``redis-server`` without persistence on its own port.

    ``pause``/``resume`` freeze it with SIGSTOP/SIGCONT (connections are
    accepted by the kernel but never answered, like a hung server); ``kill``
    and ``start`` simulate a crash and a restart on the same port.
    """

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log_dir = log_dir
        self._child: Child | None = None

    def start(self) -> None:
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        argv += ["--dir", str(self._log_dir)]
        self._child = Child(argv, self._log_dir / "redis.log")
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._answers():
            if not self._child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self._child.log_tail()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _running(self) -> Child:
        if self._child is None:
            raise RuntimeError("redis-server is not running")
        return self._child

    def pause(self) -> None:
        self._running().send(signal.SIGSTOP)

    def resume(self) -> None:
        self._running().send(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the server dies at once and its data (memory only) is gone."""
        self._running().stop(signal.SIGKILL)
        self._child = None

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None


@contextmanager
def redis_server(log_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def metric(base_url: str, sample: str) -> float:
    """The sum of a sample (e.g. ``portico_redis_errors_total``) over its series."""
    text = httpx.get(base_url + "/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample
    )
