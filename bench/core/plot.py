"""Plots as PNGs (matplotlib on its Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def figure(
    columns: int, rows: int = 1, size: tuple[float, float] = (16, 5.2)
) -> tuple[Figure, Any]:
    """A figure of ``rows`` x ``columns`` panels."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, columns, figsize=size)


def save(fig: Figure, path: Path, title: str, fontsize: int = 11) -> Path:
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(
    ax: Axes,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    title: str,
    ylabel: str = "ms",
    log: bool = False,
    rounds: Mapping[str, Sequence[Sequence[float]]] | None = None,
) -> list[float]:
    """Grouped bars, one group per label and one bar per series (with ``rounds``, each
    round's value as a dot on its bar); the groups' x positions."""
    xs = [float(x) for x in range(len(labels))]
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        at = [x + (k - (len(series) - 1) / 2) * width for x in xs]
        ax.bar(at, values, width, label=name)
        if rounds is not None:
            for x, each in zip(at, rounds[name], strict=True):
                dots(ax, x, each, "black")
    if log:
        ax.set_yscale("log")
    ax.set_xticks(xs, labels, fontsize=7, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return xs


def concurrency_axis(ax: Axes, concurrencies: Sequence[int], title: str) -> None:
    """A log2 x axis over the concurrencies measured."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(concurrencies), [str(c) for c in concurrencies])
    ax.set_xlabel("concurrency")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)


def dots(ax: Axes, x: float, values: Sequence[float], color: Any) -> None:
    """Each round's value at ``x``, to show the noise."""
    ax.scatter([x] * len(values), values, s=10, color=color, alpha=0.5, zorder=3)
