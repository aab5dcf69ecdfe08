"""The orchestrator's side of a client process: send it a job, follow its events."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich import progress
from rich.console import Console

from bench.core.procs import REPO, stop

COLUMNS = (
    progress.SpinnerColumn(),
    progress.TextColumn("{task.description}"),
    progress.BarColumn(),
    progress.MofNCompleteColumn(),
)


def drive(
    client: str,
    job: dict[str, Any],
    total: int,
    log_path: Path,
    console: Console,
    label: Callable[[dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """Run ``python -m client`` on ``job`` with a progress bar over ``total`` requests;
    return its ``point`` events. The client's stderr goes to ``log_path``."""
    points: list[dict[str, Any]] = []
    timers = (progress.TimeElapsedColumn(), progress.TimeRemainingColumn())
    columns = (*COLUMNS, progress.TextColumn("requests"), *timers)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log, progress.Progress(*columns, console=console) as bar:
        task = bar.add_task(f"{job['scenario']}: warm-up", total=total)
        argv = [sys.executable, "-m", client]
        load = subprocess.Popen(
            argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        try:
            if load.stdin is None or load.stdout is None:
                raise RuntimeError("the client's pipes did not open")
            load.stdin.write(json.dumps(job))
            load.stdin.close()
            for line in load.stdout:
                event = json.loads(line)
                if event["event"] == "start":
                    bar.update(task, description=f"{job['scenario']}: {label(event)}")
                elif event["event"] == "progress":
                    bar.advance(task, event["requests"])
                elif event["event"] == "point":
                    points.append(event)
            if load.wait() != 0:
                raise RuntimeError(f"{client} failed; see {log_path}")
        finally:
            stop(load, 5.0)
    return points
