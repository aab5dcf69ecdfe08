"""What the numbers were measured on: recorded next to every result."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "uvicorn",
    "uvloop",
    "httptools",
    "fastapi",
    "starlette",
    "pydantic",
    "httpx",
    "aiohttp",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit(repo: Path) -> str:
    argv = ["git", "rev-parse", "--short", "HEAD"]  # git from PATH
    try:
        out = subprocess.run(argv, cwd=repo, capture_output=True, text=True, check=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def describe(repo: Path, extra_packages: Sequence[str] = ()) -> dict[str, Any]:
    """The machine, the commit and the package versions, as every report's header gives them."""
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git_commit(repo),
        "packages": {name: _version(name) for name in (*PACKAGES, *extra_packages)},
    }


def stamp_end(machine: dict[str, Any]) -> None:
    """Record the load average at the end of a run next to the one at its start."""
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
