"""Unit tests read settings from the environment: start each one from a clean slate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop PORTICO_*, HF_HUB_OFFLINE and HF_ENDPOINT so a developer's shell cannot change
    results."""
    for name in list(os.environ):
        if name.upper().startswith("PORTICO_") or name.upper() in ("HF_HUB_OFFLINE", "HF_ENDPOINT"):
            monkeypatch.delenv(name)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A directory the launcher accepts as a Hugging Face checkpoint (its config alone)."""
    directory = tmp_path / "tiny-llama"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return directory
