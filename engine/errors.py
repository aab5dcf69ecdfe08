"""Errors the engine launcher reports to its user.

    EngineError                 anything the launcher refuses or fails at; exit code 2
    ├── ConfigurationError      settings that cannot work together (checked before start)
    ├── ModelError              the model cannot be found, read or converted
    └── StartupError            vLLM started but died or never became ready

Each carries a one-paragraph message meant for a terminal, not a traceback.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class: the message is what the user sees."""

    exit_code = 2


class ConfigurationError(EngineError):
    """Settings contradict each other or the checkpoint."""


class ModelError(EngineError):
    """The model cannot be located or prepared."""


class StartupError(EngineError):
    """The vLLM process exited or timed out before it was ready."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code if exit_code != 0 else 1
