"""What the code that runs in the images reads and serves: the deployment files are
checked against these, never against copies of the names."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import BaseModel

from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.settings import GatewaySettings


def gateway_routes() -> set[str]:
    """Every path the real gateway app serves."""
    app = create_app(GatewaySettings(dev_mode=True))
    return {path for route in app.routes if isinstance(path := getattr(route, "path", None), str)}


def gateway_variable_names() -> set[str]:
    """Every PORTICO_* variable GatewaySettings reads (nested groups joined by '__')."""
    names = set()
    for name, field in GatewaySettings.model_fields.items():
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            names |= {f"PORTICO_{name.upper()}__{sub.upper()}" for sub in nested.model_fields}
        else:
            names.add(f"PORTICO_{name.upper()}")
    return names


def portico_metric_names() -> set[str]:
    """Every series name the gateway can export (counters with _total, histogram parts)."""
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def vllm_source(relative: str) -> str:
    """A file of the installed vLLM (the release the engine image is built from), as text:
    reading it avoids importing vLLM, which takes seconds."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None, "vLLM (the engine-cpu extra) is required"
    assert spec.origin is not None
    return (Path(spec.origin).parent / relative).read_text()
