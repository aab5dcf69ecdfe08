"""docker-compose.yml for one GPU host, checked against the Dockerfile and the settings
objects of the processes it starts (no Docker engine here)."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from engine.settings import EngineSettings
from tests.deploy.chart import ROOT
from tests.deploy.contract import gateway_variable_names

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _default(value: str) -> str:
    """A compose value with each ${VAR:-default} replaced by its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def test_the_three_services_build_the_dockerfile_targets() -> None:
    assert set(SERVICES) == {"engine", "gateway", "redis"}
    for name in ("engine", "gateway"):
        build = SERVICES[name]["build"]
        assert build["context"] == "."
        assert re.search(rf"^FROM .+ AS {build['target']}$", DOCKERFILE, re.MULTILINE)


def test_gateway_reaches_the_engine_and_redis_by_service_name() -> None:
    environment = SERVICES["gateway"]["environment"]
    engine = urlsplit(environment["PORTICO_ENGINE_URL"])
    assert engine.hostname == "engine"
    # The port the engine image listens on (its CMD).
    assert re.search(rf'CMD \[.*"--port", "{engine.port}"', DOCKERFILE)
    assert urlsplit(environment["PORTICO_REDIS_URL"]).hostname == "redis"
    assert SERVICES["gateway"]["depends_on"] == {
        "engine": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }


def test_only_the_gateway_is_published() -> None:
    assert [name for name, service in SERVICES.items() if "ports" in service] == ["gateway"]


def test_engine_gets_a_gpu_shared_memory_and_a_model_cache() -> None:
    engine = SERVICES["engine"]
    [device] = engine["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    tensor_parallel = int(_default(engine["environment"]["PORTICO_ENGINE_TENSOR_PARALLEL_SIZE"]))
    assert device["count"] == tensor_parallel
    assert engine["shm_size"]
    assert "model-cache:/cache" in engine["volumes"]
    assert "HF_HOME=/cache/huggingface" in DOCKERFILE
    assert "/health'" in " ".join(engine["healthcheck"]["test"])


def test_engine_environment_is_valid_launcher_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PORTICO_") or name == "HF_HUB_OFFLINE":
            monkeypatch.delenv(name)
    environment = SERVICES["engine"]["environment"]
    for name, value in environment.items():
        if name.startswith("PORTICO_ENGINE_"):
            field = name.removeprefix("PORTICO_ENGINE_").lower()
            assert field in EngineSettings.model_fields, f"the launcher reads no {name}"
            monkeypatch.setenv(name, _default(value))
    settings = EngineSettings()
    assert settings.model == "Qwen/Qwen2.5-7B-Instruct"
    assert settings.startup_timeout_s >= 600


def test_gateway_environment_names_are_settings_it_reads() -> None:
    names = {n for n in SERVICES["gateway"]["environment"] if n.startswith("PORTICO_")}
    assert names <= gateway_variable_names()
