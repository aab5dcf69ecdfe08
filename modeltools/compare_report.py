"""The comparison report: JSON, Markdown and a PNG (matplotlib, imported here only).

Reads the :class:`~modeltools.compare.ModelReport` rows :mod:`modeltools.compare`
measured; compare never imports this module (the command calls one, then the other).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from engine.settings import EngineSettings
from modeltools.compare import CONCURRENCY, ModelReport
from modeltools.measure import PROMPTS

_MB = 1024 * 1024


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _speed(report: ModelReport, concurrency: int, attr: str) -> float | None:
    for speed in report.speeds:
        if speed.concurrency == concurrency:
            value: float = getattr(speed, attr)
            return value
    return None


def _speed_cell(concurrency: int, attr: str, spec: str) -> Callable[[ModelReport], str]:
    return lambda report: _fmt(_speed(report, concurrency, attr), spec)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_markdown(reports: Sequence[ModelReport], path: Path, settings: EngineSettings) -> str:
    """Write the report; returns its text."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Quantization: full precision vs 4-bit, measured",
        "",
        f"Written by `portico model compare` on {when}, {os.cpu_count()} CPUs "
        f"({platform.machine()}), vLLM CPU engine, "
        f"{'eager' if settings.enforce_eager else 'compiled'} mode, one model at a time. "
        "Perplexity: vLLM's own prompt log-probabilities over the held-out set "
        "(`modeltools/data/heldout.jsonl`). Speed: greedy streamed chat completions of 32 tokens "
        "(ignore_eos), tokens/s over the whole batch, TTFT median. Memory: PSS of the vLLM "
        "process tree after the runs (includes the 1 GiB KV cache).",
        "",
        "| | " + " | ".join(r.label for r in reports) + " |",
        "|---|" + "---|" * len(reports),
    ]
    rows: list[tuple[str, Callable[[ModelReport], str]]] = [
        ("checkpoint", lambda r: f"`{Path(r.source).name}`"),
        ("quantization", lambda r: r.quantization),
        ("on disk (MB)", lambda r: f"{r.disk_bytes / _MB:.0f}"),
        ("engine memory, PSS (MB)", lambda r: _fmt(r.memory_bytes and r.memory_bytes / _MB, ".0f")),
        ("engine start (s)", lambda r: _fmt(r.start_s, ".0f")),
        ("perplexity, held-out", lambda r: _fmt(r.perplexity, ".2f")),
        ("perplexity computed by", lambda r: r.perplexity_by),
    ]
    for conc in CONCURRENCY:
        rows.append((f"tokens/s, c={conc}", _speed_cell(conc, "tokens_per_s", ".1f")))
        rows.append((f"TTFT p50 (s), c={conc}", _speed_cell(conc, "ttft_p50_s", ".2f")))
    for name, cell in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(cell(r)) for r in reports) + " |")
    for report in reports:
        if report.refused:
            lines += ["", f"**{report.label}** was not served here: {report.refused}"]
    lines += ["", "## Answers (greedy, 48 tokens at most)", ""]
    lines += ["| prompt | " + " | ".join(r.label for r in reports) + " |"]
    lines += ["|---|" + "---|" * len(reports)]
    for i, prompt in enumerate(PROMPTS):
        cells = [r.answers[i] if i < len(r.answers) else "n/a" for r in reports]
        lines.append(f"| {_cell(prompt)} | " + " | ".join(_cell(c) for c in cells) + " |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def write_png(reports: Sequence[ModelReport], path: Path) -> None:
    """Four bar charts: size and memory, perplexity, tokens/s, TTFT."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    labels = [r.label for r in reports]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    width = 0.35
    xs = range(len(reports))
    disk = [r.disk_bytes / _MB for r in reports]
    memory = [(r.memory_bytes or 0) / _MB for r in reports]
    axes[0].bar([x - width / 2 for x in xs], disk, width, label="on disk")
    axes[0].bar([x + width / 2 for x in xs], memory, width, label="engine PSS")
    axes[0].set_title("MB")
    axes[0].legend()
    axes[1].bar(labels, [r.perplexity or 0 for r in reports], color="tab:red")
    axes[1].set_title("perplexity, held-out (lower is better)")
    for ax, attr, title in (
        (axes[2], "tokens_per_s", "tokens/s"),
        (axes[3], "ttft_p50_s", "TTFT p50 (s)"),
    ):
        for offset, conc in zip((-width / 2, width / 2), CONCURRENCY, strict=True):
            values = [_speed(r, conc, attr) or 0 for r in reports]
            ax.bar([x + offset for x in xs], values, width, label=f"c={conc}")
        ax.set_title(title)
        ax.legend()
    for ax in axes:
        ax.set_xticks(list(xs), labels)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(reports: Sequence[ModelReport], out: Path, settings: EngineSettings) -> str:
    """``quantization.json``, ``.md`` and ``.png`` into ``out``; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "quantization.json").write_text(
        json.dumps([asdict(r) for r in reports], indent=2) + "\n"
    )
    markdown = write_markdown(reports, out / "quantization.md", settings)
    write_png(reports, out / "quantization.png")
    return markdown
