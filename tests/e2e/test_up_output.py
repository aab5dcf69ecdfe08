"""What ``portico up`` prints when it cannot start: one line naming what failed and where
the full log is, and a non-zero exit code (issue #21). Run as a user runs it, in a child
process, with output captured the way ``make run > file`` captures it (not a terminal)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.test_engine_startup import LLAMA_CONFIG


def _up(*args: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "portico", "up", "--log-dir", str(tmp_path / "logs")]
    if "--embedding-port" not in args:
        argv += ["--embedding-port", str(free_port())]
    argv += args
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_gateway_port_in_use_is_one_line_and_exit_2_before_anything_starts(
    tmp_path: Path, busy_port: int
) -> None:
    result = _up(
        "--port", str(free_port()), "--gateway-port", str(busy_port), tmp_path=tmp_path
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"portico: error: port {busy_port} on 127.0.0.1 is in use, so the gateway cannot "
        "listen there: stop what uses it or pass --gateway-port with another port."
    ]
    assert not (tmp_path / "logs").exists()  # refused before any process or log


def test_engine_port_in_use_names_the_engine_and_its_flag(tmp_path: Path, busy_port: int) -> None:
    result = _up("--port", str(busy_port), tmp_path=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert f"port {busy_port} on 127.0.0.1 is in use, so the engine" in line
    assert "--port" in line


def test_embedding_port_in_use_names_the_embedding_engine_and_its_flag(
    tmp_path: Path, busy_port: int
) -> None:
    result = _up("--port", str(free_port()), "--embedding-port", str(busy_port), tmp_path=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert f"port {busy_port} on 127.0.0.1 is in use, so the embedding engine" in line
    assert "--embedding-port" in line


@pytest.mark.e2e
@pytest.mark.slow
def test_engine_exiting_during_start_up_is_one_line_naming_the_log(tmp_path: Path) -> None:
    # A config without weights: the launcher's checks pass, vLLM dies loading them.
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    result = _up(
        "--model", str(checkpoint), "--enforce-eager", "--port", str(free_port()),
        "--gateway-port", str(free_port()), tmp_path=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode not in (0, 2)
    assert result.stdout == ""  # never got as far as the base URL and key
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("portico: error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0] == lines[-1]
    match = re.search(
        r"engine exited with code (\d+) during start-up.*; full log: (\S+)$", errors[0]
    )
    assert match, errors[0]
    assert int(match[1]) == result.returncode
    log = Path(match[2])
    assert log.parent == tmp_path / "logs"
    assert "vllm.entrypoints.openai.api_server" in log.read_text()  # the command, on top
    assert "Traceback" in log.read_text()  # vLLM's own output went to the file...
    assert "Traceback" not in result.stderr  # ...not to the person
    assert len(lines) < 15, result.stderr
