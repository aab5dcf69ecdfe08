"""SIGTERM with live streams: a real gateway process (uvicorn --factory) in front of a
fake engine drains, then exits within its grace period."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.processes import Child, gateway_env
from tests.gateway.servers import serving

KEY = "drain-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _stream(url: str, out: list[str]) -> None:
    body = {"model": MODEL, "prompt": "slow-stream", "stream": True}  # ~2 s of chunks
    with httpx.Client(timeout=30) as client:
        out.append(client.post(url + "/v1/completions", json=body, headers=AUTH).text)


def test_fake_engine_sigterm_with_live_streams_all_finish_and_the_gateway_exits_in_grace(
    tmp_path: Path,
) -> None:
    engine = FakeEngine()
    with serving(engine.app) as engine_url:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app"]
        argv += ["--port", str(port), "--timeout-graceful-shutdown", "2"]
        env = gateway_env(PORTICO_ENGINE_URL=engine_url, PORTICO_API_KEYS=KEY,
                          PORTICO_DRAIN_GRACE_S="10")  # fmt: skip
        gateway = Child(argv, tmp_path / "gateway.log", env)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert gateway.alive(), gateway.log_tail()
                assert time.monotonic() < deadline, gateway.log_tail()
                time.sleep(0.1)
            bodies: list[str] = []
            streams = [threading.Thread(target=_stream, args=(url, bodies)) for _ in range(3)]
            for thread in streams:
                thread.start()
            while len(engine.received) < 3:  # the streams are running (however loaded the box)
                assert time.monotonic() < deadline + 30, "streams did not reach the engine"
                time.sleep(0.02)
            sent = time.monotonic()
            gateway.send(signal.SIGTERM)
            time.sleep(0.2)
            assert httpx.get(url + "/readyz", timeout=2).status_code == 503
            refused = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x"},
                                 headers=AUTH, timeout=5)  # fmt: skip
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "draining"
            for thread in streams:
                thread.join(timeout=15)
            gateway.proc.wait(timeout=15)
            exited_after = time.monotonic() - sent
        finally:
            gateway.stop()
    assert len(bodies) == 3
    assert all(body.rstrip().endswith("data: [DONE]") for body in bodies), bodies
    # uvicorn (>= 0.29) re-raises the captured SIGTERM after a clean shutdown, so the
    # process ends "killed by SIGTERM", as a plain uvicorn does; the log shows it was clean.
    assert gateway.proc.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete." in gateway.log_tail()
    assert exited_after < 10  # within PORTICO_DRAIN_GRACE_S
