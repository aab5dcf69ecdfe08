"""Text sets shipped with the modeltools package: calibration and held-out.

``calibration.jsonl`` feeds llm-compressor's GPTQ/AWQ calibration;
``heldout.jsonl`` (different texts) measures perplexity. Both were written for
Portico and are Apache-2.0 like the code (see ``modeltools/data/README.md``). A
user file in the same format, one ``{"text": ...}`` object per line, or plain
text with one sample per non-blank line, can replace the calibration set.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from engine.errors import ConfigurationError

CALIBRATION = "calibration.jsonl"
HELDOUT = "heldout.jsonl"


def bundled(name: str) -> list[str]:
    """One of the shipped text sets, by file name."""
    text = resources.files("modeltools.data").joinpath(name).read_text(encoding="utf-8")
    return parse(text, name)


def load(path: Path) -> list[str]:
    """A user's calibration file: JSONL with a "text" field, or one sample per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigurationError(f"calibration file {path} does not exist.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read calibration file {path}: {exc}") from exc
    samples = parse(text, str(path))
    if not samples:
        raise ConfigurationError(f"calibration file {path} holds no text.")
    return samples


def parse(text: str, origin: str) -> list[str]:
    """Samples from JSONL (objects with a non-empty "text") or plain lines.

    The format is decided by the file's first non-blank line, so a plain text
    file that happens to start with "{" on a later line is still plain text.
    """
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines or not lines[0][1].lstrip().startswith("{"):
        return [line.strip() for _, line in lines]
    samples = []
    for number, line in lines:
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigurationError(f"{origin}: line {number} is not JSON: {exc}") from exc
        sample = row.get("text") if isinstance(row, dict) else None
        if not isinstance(sample, str) or not sample.strip():
            raise ConfigurationError(f'{origin}: line {number} has no non-empty "text" string.')
        samples.append(sample)
    return samples
