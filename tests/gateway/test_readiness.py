"""``GET /readyz`` needs no credential, so it says only whether the gateway is ready:
which models the engines serve, or which have no engine, goes to the log, never to the
caller. The gateway is the real app; the engine a fake (one a test can kill)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import free_port
from tests.gateway.fake_engine import MODEL, OTHER_MODEL, FakeEngine
from tests.gateway.processes import FakeEngineProcess
from tests.gateway.servers import serving

KEY = "readiness-key"


def _settings(engine_url: str) -> GatewaySettings:
    return GatewaySettings(
        engine_url=engine_url,
        api_keys=[KEY],
        routing={"health_interval_s": 0.2, "breaker_reset_s": 30, "breaker_failures": 1},
    )


def test_ready_is_the_status_alone() -> None:
    with serving(FakeEngine().app) as engine_url, serving(create_app(_settings(engine_url))) as url:
        ready = httpx.get(url + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def test_a_model_without_an_engine_is_unavailable_named_only_in_the_log(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="portico")
    engine = FakeEngineProcess("a", tmp_path, models=f"{MODEL},{OTHER_MODEL}")
    try:
        with serving(create_app(_settings(engine.url))) as url:
            assert httpx.get(url + "/readyz").status_code == 200
            engine.kill()  # its models stay known, with no engine left to serve them
            deadline = time.monotonic() + 5
            unready = httpx.get(url + "/readyz")
            while unready.status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.1)
                unready = httpx.get(url + "/readyz")
    finally:
        engine.stop()
    assert unready.status_code == 503
    assert unready.json() == {"status": "unavailable"}
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("portico")]
    assert any(MODEL in line and OTHER_MODEL in line for line in logged), logged


def test_no_engine_at_all_is_unavailable_with_the_reason_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="portico")
    nowhere = f"http://127.0.0.1:{free_port()}"
    with serving(create_app(_settings(nowhere))) as url:
        unready = httpx.get(url + "/readyz")
    assert unready.status_code == 503
    assert unready.json() == {"status": "unavailable"}
    assert any("readyz" in r.getMessage() for r in caplog.records if r.name.startswith("portico"))
