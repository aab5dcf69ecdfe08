"""The ``overhead`` scenario's PNG."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.axes import Axes

from bench.core.plot import bars, concurrency_axis, figure, save
from bench.overhead.report import Row, closed_loop, open_loop


def _lines(ax: Axes, rows: Sequence[Row], value: Callable[[Row], float], title: str) -> None:
    """One line per target over concurrency; for CPU a shaded band of the rounds' range."""
    targets: dict[str, list[Row]] = {}
    for row in closed_loop(rows):
        targets.setdefault(row.target, []).append(row)
    for target, series in targets.items():
        series = sorted(series, key=lambda r: r.concurrency)
        xs = [r.concurrency for r in series]
        (line,) = ax.plot(xs, [value(r) for r in series], "o-", label=target)
        if "CPU" in title:
            low = [min(r.target_cpu_ms_rounds) for r in series]
            high = [max(r.target_cpu_ms_rounds) for r in series]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
    concurrency_axis(ax, sorted({r.concurrency for r in closed_loop(rows)}), title)


def write(rows: Sequence[Row], path: Path, subtitle: str) -> Path:
    fig, grid = figure(3, 2, size=(18, 9))
    _lines(grid[0][0], rows, lambda r: r.p50_ms, "p50 latency ms (non-stream, log scale)")
    grid[0][0].set_yscale("log")
    grid[0][0].legend(fontsize=8)
    _lines(grid[0][1], rows, lambda r: r.rps, "requests per second (non-stream)")
    _lines(
        grid[1][0],
        rows,
        lambda r: r.target_cpu_ms,
        "target CPU ms per request (non-stream; band: rounds)",
    )
    for ax in (grid[0][1], grid[1][0]):
        ax.set_ylim(bottom=0)
    streamed = [r for r in rows if r.stream]
    bars(
        grid[1][1],
        [f"{r.target}\nc={r.concurrency}" for r in streamed],
        {
            "first chunk p50": [r.first_chunk_p50_ms or 0.0 for r in streamed],
            "total p50": [r.p50_ms for r in streamed],
        },
        "streamed: time to first chunk and total (p50)",
    )
    fixed = open_loop(rows)
    bars(
        grid[0][2],
        [f"{r.target}\n{r.rate:g}/s" for r in fixed],
        {"p50": [r.p50_ms for r in fixed], "p99": [r.p99_ms for r in fixed]},
        "open loop: latency at fixed rates",
    )
    grid[1][2].axis("off")
    return save(fig, path, f"Portico gateway overhead — {subtitle}")
