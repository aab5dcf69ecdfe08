"""The results as one PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from stats import Row, closed_loop, open_loop


def _by_target(rows: Sequence[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for row in closed_loop(rows):
        out.setdefault(row.target, []).append(row)
    return out


def _lines(ax: Axes, rows: Sequence[Row], value: Callable[[Row], float], title: str) -> None:
    """One line per target over concurrency; a shaded band where per-round ranges exist."""
    for target, series in _by_target(rows).items():
        series = sorted(series, key=lambda r: r.concurrency)
        xs = [r.concurrency for r in series]
        (line,) = ax.plot(xs, [value(r) for r in series], "o-", label=target)
        if value is _cpu_ms:
            low = [min(r.target_cpu_ms_rounds) for r in series]
            high = [max(r.target_cpu_ms_rounds) for r in series]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    concurrencies = sorted({r.concurrency for r in closed_loop(rows)})
    ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
    ax.set_xlabel("concurrency")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)


def _cpu_ms(row: Row) -> float:
    return row.target_cpu_ms


def _stream(ax: Axes, rows: Sequence[Row]) -> None:
    stream_rows = [r for r in rows if r.stream]
    labels = [f"{r.target}\nc={r.concurrency}" for r in stream_rows]
    xs = list(range(len(stream_rows)))
    width = 0.4
    ax.bar(
        [x - width / 2 for x in xs],
        [r.first_chunk_p50_ms or 0.0 for r in stream_rows],
        width,
        label="first chunk p50",
    )
    ax.bar([x + width / 2 for x in xs], [r.p50_ms for r in stream_rows], width, label="total p50")
    ax.set_xticks(xs, labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("ms")
    ax.set_title("streamed: time to first chunk and total (p50)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)


def _open(ax: Axes, rows: Sequence[Row]) -> None:
    """Open loop: p50 and p99 per target at each fixed rate."""
    series = open_loop(rows)
    labels = [f"{r.target}\n{r.rate:g}/s" for r in series]
    xs = list(range(len(series)))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], [r.p50_ms for r in series], width, label="p50")
    ax.bar([x + width / 2 for x in xs], [r.p99_ms for r in series], width, label="p99")
    ax.set_xticks(xs, labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("ms")
    ax.set_title("open loop: latency at fixed rates")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)


def write(rows: Sequence[Row], path: Path, subtitle: str) -> Path:
    fig, grid = plt.subplots(2, 3, figsize=(18, 9))
    axes = [grid[0][:2], grid[1][:2]]
    _lines(axes[0][0], rows, lambda r: r.p50_ms, "p50 latency ms (non-stream, log scale)")
    axes[0][0].set_yscale("log")
    axes[0][0].legend(fontsize=8)
    _lines(axes[0][1], rows, lambda r: r.rps, "requests per second (non-stream)")
    axes[0][1].set_ylim(bottom=0)
    _lines(axes[1][0], rows, _cpu_ms, "target CPU ms per request (non-stream; band: rounds)")
    axes[1][0].set_ylim(bottom=0)
    _stream(axes[1][1], rows)
    _open(grid[0][2], rows)
    grid[1][2].axis("off")
    fig.suptitle(f"Portico gateway overhead — {subtitle}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
