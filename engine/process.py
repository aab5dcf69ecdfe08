"""Child processes with a supervisor's manners.

Children run in their own session (so a terminal's Ctrl-C reaches them once,
through us, not twice), die with their parent (``PR_SET_PDEATHSIG``), have
their output handed line by line to a sink (by default echoed to stderr with a
prefix; ``portico up`` gives a log file, :class:`engine.progress.StartupLog`), and
keep the last lines so a failed start-up can be explained without scrolling: in
one line naming the log file when there is one, else with those lines.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO

from engine.errors import StartupError
from engine.progress import error_line

_PR_SET_PDEATHSIG = 1
LineSink = Callable[[str], None]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the supervisor is killed
    # outright (SIGKILL), the kernel still sends the child SIGTERM.
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """One supervised child process."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        tail: int = 40,
        sink: LineSink | None = None,
        log_path: Path | None = None,
    ) -> None:
        """``sink`` receives each output line (default: echoed to stderr with a prefix);
        ``log_path`` is where that sink keeps them, named in start-up errors."""
        self.name = name
        self.log_path = log_path
        self._sink = sink if sink is not None else self._echo_line
        self._argv = list(argv)
        # Passing the environment on to the child (vLLM reads its own variables there, the
        # gateway its GatewaySettings), not reading configuration here.
        self._env = {**os.environ, **(env or {})}
        self._tail: deque[str] = deque(maxlen=tail)
        self._popen: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        popen = subprocess.Popen(
            self._argv,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if popen.stdout is None:  # cannot happen with stdout=PIPE; keeps the type narrow
            raise RuntimeError(f"{self.name}: the child's output pipe is missing")
        self._popen = popen
        self._reader = threading.Thread(
            target=self._echo, args=(popen.stdout,), name=f"{self.name}-output", daemon=True
        )
        self._reader.start()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name}: start() it first")
        return self._popen

    @property
    def pid(self) -> int:
        return self._started().pid

    def poll(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def tail(self) -> str:
        return "\n".join(self._tail)

    def wait_ready(
        self,
        probe: Callable[[], bool],
        timeout_s: float,
        cancel: threading.Event | None = None,
        on_wait: Callable[[float], None] | None = None,
    ) -> float:
        """Poll ``probe`` until it is true; return the seconds it took. ``on_wait`` gets
        the seconds so far at every poll (a progress line).

        Raises StartupError if the process exits first, the deadline passes, or
        ``cancel`` is set (Ctrl-C during a long start-up).
        """
        started = time.monotonic()
        while True:
            if cancel is not None and cancel.is_set():
                self.stop(grace_s=10)
                raise StartupError(f"{self.name} start-up interrupted.", exit_code=130)
            code = self.poll()
            if code is not None:
                self._drain_output()
                raise StartupError(self._failure(f"exited with code {code}"), exit_code=code)
            if probe():
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                self.stop(grace_s=10)
                self._drain_output()
                raise StartupError(self._failure(f"was not ready after {timeout_s:.0f} s"))
            if on_wait is not None:
                on_wait(time.monotonic() - started)
            time.sleep(0.5)

    def _failure(self, what: str) -> str:
        """One line naming the log when there is one; else the last lines themselves."""
        if self.log_path is None:
            return f"{self.name} {what} during start-up. Last output:\n{self.tail()}"
        cause = error_line(list(self._tail))
        because = f" ({cause})" if cause else ""
        return f"{self.name} {what} during start-up{because}; full log: {self.log_path}"

    def signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def stop(self, grace_s: float) -> int:
        """SIGTERM, then SIGKILL after ``grace_s``; returns the exit code."""
        popen = self._started()
        self.signal(signal.SIGTERM)
        try:
            return popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            # vLLM runs its engine core in a child of its own: kill the group.
            os.killpg(popen.pid, signal.SIGKILL)
            return popen.wait()

    def _drain_output(self, timeout_s: float = 2.0) -> None:
        """Let the echo thread catch up with an exited child, so tail() holds its last
        lines (usually the error). Bounded: a grandchild may keep the pipe open."""
        if self._reader is not None:
            self._reader.join(timeout_s)

    def _echo(self, stdout: IO[bytes]) -> None:
        with stdout as output:  # closed at EOF: the pipe's fd is not leaked
            for raw in output:
                line = raw.decode(errors="replace").rstrip()
                self._tail.append(line)
                self._sink(line)

    def _echo_line(self, line: str) -> None:
        print(f"[{self.name}] {line}", file=sys.stderr, flush=True)


@contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """Turn SIGINT/SIGTERM into an event the supervisor loop checks."""
    requested = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        requested.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def supervise(
    processes: Sequence[ManagedProcess], requested: threading.Event, grace_s: float
) -> int:
    """Wait until a stop is requested or any process exits; stop the rest (last started
    first) and return the exit code to propagate: the first to exit on its own, or the
    engine's after a requested stop."""
    exited: int | None = None
    while not requested.wait(0.2):
        codes = [p.poll() for p in processes]
        if any(code is not None for code in codes):
            exited = next(code for code in codes if code is not None)
            break
    results = [p.stop(grace_s) for p in reversed(processes)]
    if exited is not None:
        return exited if exited != 0 else 1  # a server that stops by itself is a failure
    # Negative codes are the signals we just sent: a clean, requested stop.
    return max((code for code in results if code > 0), default=0)
