from __future__ import annotations

from engine.errors import ConfigurationError, EngineError, ModelError, StartupError


def test_launcher_errors_exit_with_code_2() -> None:
    assert EngineError("x").exit_code == 2
    assert ConfigurationError("x").exit_code == 2
    assert ModelError("x").exit_code == 2


def test_startup_error_keeps_the_child_exit_code() -> None:
    assert StartupError("died", exit_code=7).exit_code == 7


def test_startup_error_never_reports_success() -> None:
    assert StartupError("exited cleanly but too early", exit_code=0).exit_code == 1
