from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigurationError
from modeltools import calibration


def test_shipped_calibration_set_has_a_few_hundred_distinct_samples() -> None:
    samples = calibration.bundled(calibration.CALIBRATION)
    assert 200 <= len(samples) <= 400
    assert len(set(samples)) == len(samples)
    assert any("def " in s for s in samples), "code samples are part of the mix"


def test_heldout_set_shares_no_text_with_the_calibration_set() -> None:
    heldout = calibration.bundled(calibration.HELDOUT)
    assert len(heldout) >= 50
    assert not set(heldout) & set(calibration.bundled(calibration.CALIBRATION))


def test_jsonl_file_is_read_by_its_text_field(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "one"}\n\n{"text": "two\\nlines", "source": "x"}\n')
    assert calibration.load(path) == ["one", "two\nlines"]


def test_plain_text_file_gives_one_sample_per_non_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("first sample\n\n  second sample  \n")
    assert calibration.load(path) == ["first sample", "second sample"]


def test_jsonl_line_without_text_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n\n{"prompt": "no"}\n')
    with pytest.raises(ConfigurationError, match='line 3 has no non-empty "text"'):
        calibration.load(path)


def test_broken_json_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(ConfigurationError, match="line 2 is not JSON"):
        calibration.load(path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("\n\n")
    with pytest.raises(ConfigurationError, match="holds no text"):
        calibration.load(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        calibration.load(tmp_path / "missing.jsonl")
