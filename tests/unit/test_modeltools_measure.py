from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.settings import EngineSettings
from modeltools import measure
from modeltools.compare import ModelReport
from modeltools.compare_report import write_markdown, write_png


def _proc(root: Path, pid: int, ppid: int, pss_kib: int) -> None:
    directory = root / str(pid)
    directory.mkdir()
    # The command name may hold spaces and parentheses; the parser splits after the last ")".
    (directory / "stat").write_text(f"{pid} (VLLM::Engine Core (x)) S {ppid} 1 1 0 -1\n")
    (directory / "smaps_rollup").write_text(f"Rss: {pss_kib * 2} kB\nPss: {pss_kib} kB\n")


def test_tree_pss_sums_a_process_and_all_its_descendants_only(tmp_path: Path) -> None:
    _proc(tmp_path, 100, 1, 1000)  # the vLLM API server
    _proc(tmp_path, 101, 100, 3000)  # its engine core
    _proc(tmp_path, 102, 101, 500)  # a grandchild
    _proc(tmp_path, 200, 1, 7000)  # an unrelated process
    assert measure.tree_pss_bytes(100, proc=tmp_path) == 4500 * 1024


def test_tree_pss_of_a_vanished_process_is_zero(tmp_path: Path) -> None:
    assert measure.tree_pss_bytes(4242, proc=tmp_path) == 0


def test_directory_bytes_counts_every_file(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"x" * 5)
    assert measure.directory_bytes(tmp_path) == 15


def _reports() -> list[ModelReport]:
    speeds = [measure.Speed(1, 3, 20.0, 0.1), measure.Speed(8, 8, 90.0, 0.4)]
    base = ModelReport("base", "/m/base", "none (bf16 weights)", 270 * 1024 * 1024,
                       start_s=40, memory_bytes=2 * 1024**3, perplexity=34.0,
                       speeds=speeds, answers=["Paris."] * len(measure.PROMPTS))  # fmt: skip
    refused = ModelReport("w4a16", "/m/w4a16", "AWQ W4A16, group 64", 110 * 1024 * 1024,
                          refused="holds W4A16 weights | no AVX-512", perplexity=40.0,
                          perplexity_by="transformers (CPU, float32)")  # fmt: skip
    return [base, refused]


def test_markdown_report_has_a_column_per_model_and_the_refusal(tmp_path: Path) -> None:
    text = write_markdown(_reports(), tmp_path / "q.md", EngineSettings(enforce_eager=True))
    assert (tmp_path / "q.md").read_text() == text
    assert "| | base | w4a16 |" in text
    assert "| on disk (MB) | 270 | 110 |" in text
    assert "| perplexity, held-out | 34.00 | 40.00 |" in text
    assert "| tokens/s, c=8 | 90.0 | n/a |" in text
    assert "| What is the capital of France? | Paris. | n/a |" in text
    assert "**w4a16** was not served here: holds W4A16 weights | no AVX-512" in text
    assert "eager mode" in text


def test_png_report_is_written(tmp_path: Path) -> None:
    write_png(_reports(), tmp_path / "q.png")
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_perplexity_of_uniform_logprobs_is_the_vocabulary_size() -> None:
    assert measure._from_logprobs([math.log(1 / 50)] * 7) == pytest.approx(50)
