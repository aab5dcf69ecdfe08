"""``portico model compare BASE QUANT``: what quantization costs and saves, measured.

Starts each model in turn on the real engine (``portico engine serve`` code
path, one at a time so they do not compete for the CPU), measures it with
:mod:`modeltools.measure`, stops it, and writes ``quantization.md`` and
``quantization.png`` (plus the raw numbers as JSON) into the output directory
(:mod:`modeltools.compare_report`).
A checkpoint this machine cannot serve (W4A16 on an AVX2-only CPU) gets the
launcher's reason instead of engine numbers, and its perplexity computed with
transformers on CPU (see :func:`modeltools.measure.local_perplexity`).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from engine import launcher, model
from engine.errors import ConfigurationError, StartupError
from engine.settings import EngineSettings
from modeltools import calibration, measure

CONCURRENCY = (1, 8)


@dataclass
class ModelReport:
    """One model's row in the report; ``refused`` replaces the numbers when it cannot run."""

    label: str
    source: str
    quantization: str
    disk_bytes: int
    refused: str | None = None
    start_s: float | None = None
    memory_bytes: int | None = None
    perplexity: float | None = None
    perplexity_by: str = "vLLM"
    speeds: list[measure.Speed] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def describe(label: str, name: str, settings: EngineSettings) -> tuple[ModelReport, Path]:
    checkpoint = model.prepare(settings.model_copy(update={"model": name}))
    directory = Path(checkpoint.source)
    quant = "none (bf16 weights)"
    manifest = directory / "portico-quantization.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        quant = f"{data['method'].upper()} {data['scheme']}, group {data['group_size']}"
    elif checkpoint.quant_method is not None:
        quant = checkpoint.quant_method
    return ModelReport(label, str(directory), quant, measure.directory_bytes(directory)), directory


def measure_model(
    report: ModelReport, directory: Path, settings: EngineSettings, requests: dict[int, int]
) -> ModelReport:
    """Serve ``directory`` and fill in ``report``; a launcher refusal is recorded, not raised."""
    engine_settings = settings.model_copy(update={"model": str(directory), "port": free_port()})
    try:
        command = launcher.plan(engine_settings)
    except ConfigurationError as exc:
        report.refused = str(exc)
        _log(f"{report.label}: not servable here; perplexity with transformers instead")
        report.perplexity = measure.local_perplexity(directory, _heldout())
        report.perplexity_by = "transformers (CPU, float32)"
        return report
    began = time.monotonic()
    try:
        process = launcher.start(engine_settings, command)
    except StartupError as exc:
        report.refused = f"the engine did not start: {str(exc).splitlines()[0]}"
        return report
    try:
        report.start_s = time.monotonic() - began
        url = engine_settings.base_url
        name = measure.served_model(url)
        report.answers = measure.answers(url, name)
        report.perplexity = measure.perplexity(url, name, _heldout())
        for concurrency in CONCURRENCY:
            _log(f"{report.label}: speed at concurrency {concurrency}")
            report.speeds.append(
                measure.speed(url, name, concurrency, requests[concurrency], max_tokens=32)
            )
        report.memory_bytes = measure.tree_pss_bytes(process.pid)
    except httpx.HTTPError as exc:
        # Keep what was measured and the other models' rows: an engine that fails
        # on its first request is a finding of the comparison, not a crash of it.
        report.refused = f"the engine failed while measured: {type(exc).__name__}: {exc}"
    finally:
        process.stop(settings.shutdown_timeout_s)
    return report


def _heldout() -> list[str]:
    return calibration.bundled(calibration.HELDOUT)


def measure_all(base: str, quantized: Sequence[str], settings: EngineSettings) -> list[ModelReport]:
    """Measure the base model, then each quantized one, one engine at a time."""
    requests = {1: 3, 8: 8}
    reports = []
    for label, name in [("base", base), *((Path(q).name, q) for q in quantized)]:
        report, directory = describe(label, name, settings)
        _log(f"measuring {label}: {directory}")
        reports.append(measure_model(report, directory, settings, requests))
    return reports


def _log(message: str) -> None:
    print(f"portico: {message}", file=sys.stderr, flush=True)
