"""``python -m engine``: the launcher's own command line, what the engine image runs
(its entrypoint is checked against this parser in tests/deploy)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from engine.main import ACTIONS, build_parser, main
from engine.settings import EngineSettings


def test_actions_are_serve_prepare_and_command() -> None:
    assert ACTIONS == ("serve", "prepare", "command")


def test_every_engine_setting_has_a_flag() -> None:
    args = vars(build_parser().parse_args(["serve"]))
    assert set(EngineSettings.model_fields) <= set(args)


def test_command_prints_the_vllm_command_line(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["command", "--model", str(checkpoint), "--port", "9001"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[words.index("--port") + 1] == "9001"
    assert words[words.index("--model") + 1] == str(checkpoint.resolve())


def test_refusals_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prepare", "--model", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("portico: error: model path")
    assert main(["command", "--model", str(tmp_path), "--port", "0"]) == 2
    assert "portico: invalid settings" in capsys.readouterr().err


def test_python_dash_m_engine_runs_the_launcher_alone(checkpoint: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine", "prepare", "--model", str(checkpoint)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(checkpoint.resolve())
