"""Unit tests read settings from the environment: start each one from a clean slate."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop PORTICO_* and HF_HUB_OFFLINE so a developer's shell cannot change results."""
    for name in list(os.environ):
        if name.upper().startswith("PORTICO_") or name.upper() == "HF_HUB_OFFLINE":
            monkeypatch.delenv(name)
