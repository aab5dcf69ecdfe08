"""What a checkpoint says about itself: its name and its quantization.

Read from ``config.json`` only, so the launcher can validate settings before
vLLM spends a minute loading weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelError


@dataclass(frozen=True)
class Checkpoint:
    """A model vLLM can load, as far as the launcher knows it."""

    source: str
    """What vLLM receives as ``--model``: a local directory or a Hugging Face id."""
    served_name: str
    config_known: bool = False
    quant_method: str | None = None
    weight_only: bool = False
    """Quantized weights with 16-bit activations (W4A16/W8A16: GPTQ, AWQ, ...)."""


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{directory} is not a model checkpoint: it has no config.json.") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path} does not hold a JSON object.")
    return config


def from_config(source: str, served_name: str, config: dict[str, Any] | None) -> Checkpoint:
    """Describe a checkpoint from its (possibly unknown) config.json contents."""
    if config is None:
        return Checkpoint(source=source, served_name=served_name)
    quant = config.get("quantization_config")
    if not isinstance(quant, dict):
        return Checkpoint(source=source, served_name=served_name, config_known=True)
    method = str(quant.get("quant_method", "unknown")).lower()
    return Checkpoint(
        source=source,
        served_name=served_name,
        config_known=True,
        quant_method=method,
        weight_only=_is_weight_only(method, quant),
    )


def _is_weight_only(method: str, quant: dict[str, Any]) -> bool:
    if method in ("gptq", "awq"):
        return True  # both formats only exist as weight-only (A16) schemes
    if method != "compressed-tensors":
        return False
    groups = quant.get("config_groups") or {}
    return any(
        isinstance(group, dict)
        and group.get("weights") is not None
        and group.get("input_activations") is None
        for group in groups.values()
    )
