"""The checks ``portico up`` and ``portico engine serve`` make before anything starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from engine import launcher
from engine.errors import ConfigurationError
from tests.conftest import free_port


def test_a_port_someone_listens_on_is_refused_naming_the_flag() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ConfigurationError, match=rf"port {port} on 127.0.0.1 is in use.*--x"):
            launcher.require_free_port("127.0.0.1", port, "engine", "--x")


def test_a_free_port_passes() -> None:
    launcher.require_free_port("127.0.0.1", free_port(), "engine", "--port")


def test_too_little_disk_space_is_refused_with_the_numbers(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"^no disk space: \d+ MiB free in .*needed"):
        launcher.require_disk_space(tmp_path, needed=1 << 62)


def test_enough_disk_space_passes_and_creates_the_directory(tmp_path: Path) -> None:
    launcher.require_disk_space(tmp_path / "cache", needed=1)
    assert (tmp_path / "cache").is_dir()
