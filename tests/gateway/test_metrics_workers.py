"""Metrics stay correct with several uvicorn workers: any worker's /metrics shows
the sum over all of them (prometheus-client multiprocess mode)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.processes import gateway_env
from tests.gateway.servers import serving

REQUESTS = 40


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[str]:
    """``portico gateway serve --workers 2``; the metrics directory is tmp_path/metrics."""
    port = free_port()
    with serving(FakeEngine().app) as engine_url:
        shared = tmp_path / "metrics"
        shared.mkdir()
        env = gateway_env(
            PORTICO_ENGINE_URL=engine_url,
            PORTICO_API_KEYS="k",
            PROMETHEUS_MULTIPROC_DIR=str(shared),
        )
        argv = [sys.executable, "-m", "portico", "gateway", "serve", "--port", str(port)]
        log = (tmp_path / "gateway.log").open("wb")
        proc = subprocess.Popen([*argv, "--workers", "2"], env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, "gateway died"
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()


def _sample(text: str, pattern: str) -> float:
    match = re.search(pattern + r" ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, pattern
    return float(match.group(1))


def test_counts_add_up_across_two_workers(two_workers: str, tmp_path: Path) -> None:
    body = {"model": MODEL, "prompt": "fine", "max_tokens": 5}
    for _ in range(REQUESTS):
        # A new connection each time, so the kernel spreads requests over both workers.
        with httpx.Client(base_url=two_workers, headers={"Authorization": "Bearer k"}) as c:
            assert c.post("/v1/completions", json=body).status_code == 200
    # Both workers counted requests (one counter file per worker pid).
    writers = {p.stem.rsplit("_", 1)[-1] for p in (tmp_path / "metrics").glob("counter_*.db")}
    assert len(writers) == 2
    route = 'route="/v1/completions",status_class="2xx"'
    for _ in range(4):  # whichever worker answers the scrape, the totals are the same
        text = httpx.get(two_workers + "/metrics").text
        assert _sample(text, rf'portico_requests_total{{model="{MODEL}",{route}}}') == REQUESTS
        assert _sample(text, rf'portico_completion_tokens_total{{model="{MODEL}"}}') == 3 * REQUESTS
