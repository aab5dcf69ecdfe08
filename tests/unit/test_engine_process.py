from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from engine.errors import StartupError
from engine.process import ManagedProcess, supervise

SLEEPER = "import time; time.sleep(60)"
# Ignores SIGTERM, says so, then sleeps: only SIGKILL ends it.
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ignoring SIGTERM', flush=True)\n"
    "time.sleep(60)\n"
)


def _child(name: str, code: str, **kwargs: object) -> ManagedProcess:
    return ManagedProcess(name, [sys.executable, "-c", code], **kwargs)  # type: ignore[arg-type]


def _wait_for_exit_without_reaping(process: ManagedProcess) -> None:
    # WNOWAIT leaves the zombie in place, so ManagedProcess still sees the exit code.
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)


@pytest.fixture
def started() -> Iterator[list[ManagedProcess]]:
    """Processes a test starts; any still running afterwards are killed."""
    processes: list[ManagedProcess] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.stop(grace_s=1)


def test_wait_ready_raises_with_exit_code_and_output_when_child_exits_early(
    started: list[ManagedProcess],
) -> None:
    child = _child("engine", "import sys; print('CUDA not found, giving up'); sys.exit(3)")
    started.append(child)
    child.start()
    with pytest.raises(StartupError) as excinfo:
        child.wait_ready(lambda: False, timeout_s=30)
    assert excinfo.value.exit_code == 3
    message = str(excinfo.value)
    assert "engine exited with code 3 during start-up" in message
    assert "CUDA not found, giving up" in message


def test_startup_error_includes_the_last_line_a_child_printed_before_exiting(
    started: list[ManagedProcess],
) -> None:
    # Enough output to still be in the pipe when the child is already gone.
    code = (
        "import sys\n"
        "for i in range(20000): print('loading', i)\n"
        "print('FATAL: last words')\n"
        "sys.exit(4)\n"
    )
    child = _child("engine", code, tail=5)
    started.append(child)
    child.start()
    _wait_for_exit_without_reaping(child)
    with pytest.raises(StartupError) as excinfo:
        child.wait_ready(lambda: False, timeout_s=30)
    assert excinfo.value.exit_code == 4
    assert str(excinfo.value).endswith("loading 19999\nFATAL: last words")


def test_tail_keeps_only_the_last_lines(started: list[ManagedProcess]) -> None:
    child = _child("engine", "for i in range(10): print('line', i)", tail=3)
    started.append(child)
    child.start()
    _wait_for_exit_without_reaping(child)
    with pytest.raises(StartupError):
        child.wait_ready(lambda: False, timeout_s=30)
    assert child.tail() == "line 7\nline 8\nline 9"


def test_child_receives_the_extra_environment(started: list[ManagedProcess]) -> None:
    code = "import os; print('value=' + os.environ['PORTICO_TEST_VALUE'])"
    child = _child("engine", code, env={"PORTICO_TEST_VALUE": "42"})
    started.append(child)
    child.start()
    _wait_for_exit_without_reaping(child)
    with pytest.raises(StartupError):
        child.wait_ready(lambda: False, timeout_s=30)
    assert "value=42" in child.tail()


def test_wait_ready_returns_once_the_probe_succeeds(started: list[ManagedProcess]) -> None:
    child = _child("engine", SLEEPER)
    started.append(child)
    child.start()
    calls = []

    def probe() -> bool:
        calls.append(time.monotonic())
        return len(calls) == 2

    elapsed = child.wait_ready(probe, timeout_s=30)
    assert len(calls) == 2
    assert 0 < elapsed < 30
    assert child.poll() is None  # still serving


def test_wait_ready_timeout_stops_the_child(started: list[ManagedProcess]) -> None:
    child = _child("engine", SLEEPER)
    started.append(child)
    child.start()
    with pytest.raises(StartupError, match="engine was not ready after 0 s") as excinfo:
        child.wait_ready(lambda: False, timeout_s=0.1)
    assert excinfo.value.exit_code == 1
    assert child.poll() == -signal.SIGTERM


def test_cancelled_wait_ready_stops_the_child_and_exits_130(
    started: list[ManagedProcess],
) -> None:
    child = _child("engine", SLEEPER)
    started.append(child)
    child.start()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(StartupError, match="start-up interrupted") as excinfo:
        child.wait_ready(lambda: False, timeout_s=30, cancel=cancel)
    assert excinfo.value.exit_code == 130
    assert child.poll() is not None


def test_stop_terminates_a_sleeping_child(started: list[ManagedProcess]) -> None:
    child = _child("engine", SLEEPER)
    started.append(child)
    child.start()
    assert child.poll() is None
    began = time.monotonic()
    assert child.stop(grace_s=10) == -signal.SIGTERM
    assert time.monotonic() - began < 5  # SIGTERM did it, no grace period spent
    assert child.poll() == -signal.SIGTERM


def test_stop_kills_a_child_that_ignores_sigterm(started: list[ManagedProcess]) -> None:
    child = _child("engine", STUBBORN)
    started.append(child)
    child.start()
    child.wait_ready(lambda: "ignoring SIGTERM" in child.tail(), timeout_s=30)
    assert child.stop(grace_s=0.3) == -signal.SIGKILL


def test_stop_of_an_exited_child_returns_its_exit_code(started: list[ManagedProcess]) -> None:
    child = _child("engine", "raise SystemExit(5)")
    started.append(child)
    child.start()
    _wait_for_exit_without_reaping(child)
    assert child.stop(grace_s=1) == 5


def test_supervise_returns_the_exit_code_of_a_child_that_exits_by_itself(
    started: list[ManagedProcess],
) -> None:
    server = _child("engine", SLEEPER)
    crasher = _child("gateway", "import time; time.sleep(0.3); raise SystemExit(7)")
    started += [server, crasher]
    server.start()
    crasher.start()
    assert supervise([server, crasher], threading.Event(), grace_s=5) == 7
    assert server.poll() == -signal.SIGTERM  # the survivor was stopped


def test_supervise_treats_a_clean_exit_of_a_server_as_failure(
    started: list[ManagedProcess],
) -> None:
    child = _child("engine", "pass")
    started.append(child)
    child.start()
    assert supervise([child], threading.Event(), grace_s=5) == 1


def test_supervise_after_a_requested_stop_returns_0(started: list[ManagedProcess]) -> None:
    first = _child("engine", SLEEPER)
    second = _child("gateway", SLEEPER)
    started += [first, second]
    first.start()
    second.start()
    requested = threading.Event()
    requested.set()
    assert supervise([first, second], requested, grace_s=5) == 0
    assert first.poll() == -signal.SIGTERM
    assert second.poll() == -signal.SIGTERM
