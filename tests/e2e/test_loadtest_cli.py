"""``portico loadtest`` as a user runs it: a subprocess against the session's real stack,
given the base URL exactly as ``portico up`` prints it (``.../v1``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import MODEL, Stack

pytestmark = pytest.mark.e2e


def _loadtest(stack: Stack, api_key: str, out: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "portico", "loadtest",
        "--base-url", stack.base_url, "--model", MODEL, "--api-key", api_key,
        "--concurrency", "1", "2", "--requests", "3", "--max-tokens", "8",
        "--ignore-eos", "--ttft-slo-ms", "60000", "--timeout", "60", "--out", str(out),
    ]  # fmt: skip
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
    )


def test_loadtest_sweeps_the_real_engine_and_writes_its_reports(
    stack: Stack, tmp_path: Path
) -> None:
    done = _loadtest(stack, stack.api_key, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "loadtest.json").read_text())
    levels = {level["concurrency"]: level for level in report["levels"]}
    assert sorted(levels) == [1, 2]
    for level in levels.values():
        assert (level["requests"], level["ok"], level["error_count"]) == (3, 3, 0)
        assert level["tokens_per_s"] > 0
        assert level["completion_tokens"] == 3 * 8  # from the usage chunks (ignore_eos)
        assert level["cache_hits"] == 0
        assert 0 < level["ttft_ms"]["p99"] <= level["latency_ms"]["p99"]
        for sample in level["samples"]:
            assert 0 < sample["ttft_s"] <= sample["latency_s"]
    assert report["best_tokens_per_s_concurrency"] in (1, 2)
    assert report["within_ttft_slo_concurrency"] == 2
    assert "Most tokens/s: concurrency" in done.stdout
    assert "| 2 | 3 | 0 |" in (tmp_path / "loadtest.md").read_text()
    assert (tmp_path / "loadtest.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_loadtest_with_a_wrong_key_stops_with_one_line(stack: Stack, tmp_path: Path) -> None:
    done = _loadtest(stack, "pk-wrong-key", tmp_path)
    assert done.returncode != 0
    assert "401" in done.stderr
    assert "authentication" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "loadtest.json").exists()
