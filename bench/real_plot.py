"""The real-engine scenarios as PNGs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from real_report import DIRECT, GATEWAY

COLORS = {
    "miss": "tab:red",
    "hit": "tab:green",
    "stream-miss": "tab:orange",
    "stream-hit": "tab:blue",
}


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cache(replies: Sequence[dict[str, Any]], summary: dict[str, Any], path: Path, sub: str) -> Path:
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 5.2))
    ok = [r for r in replies if r["error"] is None]
    # Every request, in the order sent: misses take the engine's time, hits do not.
    for kind, color in COLORS.items():
        points = [(i, r["total_us"] / 1000) for i, r in enumerate(ok) if r["kind"] == kind]
        if points:
            xs, ys = zip(*points, strict=True)
            left.scatter(xs, ys, s=14, color=color, label=kind)
    left.set_yscale("log")
    left.set_xlabel("request # (sequential)")
    left.set_ylabel("ms (log)")
    left.set_title("every request: total time")
    left.legend(fontsize=8)
    left.grid(True, alpha=0.3)

    rows = summary["rows"]
    kinds = [k for k in COLORS if k in rows]
    xs = list(range(len(kinds)))
    width = 0.4
    middle.bar([x - width / 2 for x in xs], [rows[k]["p50_ms"] for k in kinds], width, label="p50")
    middle.bar([x + width / 2 for x in xs], [rows[k]["p99_ms"] for k in kinds], width, label="p99")
    for x, k in zip(xs, kinds, strict=True):
        middle.annotate(
            f"{rows[k]['p50_ms']:.1f}", (x - width / 2, rows[k]["p50_ms"]), ha="center", fontsize=7
        )
    middle.set_yscale("log")
    middle.set_xticks(xs, kinds, fontsize=7, rotation=20, ha="right")
    middle.set_ylabel("ms (log)")
    miss, hit = rows.get("miss"), rows.get("hit")
    ratio = f" — miss/hit p50 {miss['p50_ms'] / hit['p50_ms']:.0f}x" if miss and hit else ""
    middle.set_title(f"total time p50 / p99{ratio}")
    middle.legend(fontsize=8)
    middle.grid(True, axis="y", alpha=0.3)

    stream_kinds = [k for k in kinds if k.startswith("stream")]
    xs = list(range(len(stream_kinds)))
    right.bar(
        [x - width / 2 for x in xs],
        [rows[k]["first_token_p50_ms"] for k in stream_kinds],
        width,
        label="first token p50",
    )
    right.bar(
        [x + width / 2 for x in xs],
        [rows[k]["p50_ms"] for k in stream_kinds],
        width,
        label="total p50",
    )
    right.set_yscale("log")
    right.set_xticks(xs, stream_kinds, fontsize=7, rotation=20, ha="right")
    right.set_ylabel("ms (log)")
    lookup = summary["lookup"]
    mean = lookup["mean_ms"]
    right.set_title(
        "streamed: first token and total"
        + (f"\n(gateway lookup mean {mean:.2f} ms)" if mean is not None else "")
    )
    right.legend(fontsize=8)
    right.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"Portico cache on the real engine: hit vs miss — {sub}", fontsize=11)
    return _save(fig, path)


def engine(summary: dict[str, Any], path: Path, sub: str) -> Path:
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 5.2))
    rows = summary["rows"]
    concurrencies = sorted({r["concurrency"] for r in rows})
    for target, marker in ((DIRECT, "o"), (GATEWAY, "s")):
        series = sorted((r for r in rows if r["target"] == target), key=lambda r: r["concurrency"])
        if not series:
            continue
        cs = [r["concurrency"] for r in series]
        (line,) = left.plot(cs, [r["tokens_per_s"] for r in series], marker + "-", label=target)
        for r in series:  # each round's value, to show the noise
            left.scatter(
                [r["concurrency"]] * len(r["tokens_per_s_rounds"]),
                r["tokens_per_s_rounds"],
                s=10,
                color=line.get_color(),
                alpha=0.5,
            )
        middle.plot(cs, [r["ttft_p50_ms"] for r in series], marker + "-", label=f"{target} p50")
        middle.plot(
            cs,
            [r["ttft_p90_ms"] for r in series],
            marker + "--",
            color=middle.lines[-1].get_color(),
            alpha=0.6,
            label=f"{target} p90",
        )
    ratios = summary["ratios"]
    rc = [r["concurrency"] for r in ratios]
    right.axhline(1.0, color="gray", lw=1)
    for key, style, label in (("tokens_per_s", "o-", "tokens/s"), ("ttft_p50", "s-", "TTFT p50")):
        (line,) = right.plot(rc, [r[key] for r in ratios], style, label=label)
        for r in ratios:  # each round's ratio, to show the noise
            right.scatter(
                [r["concurrency"]] * len(r[key + "_rounds"]),
                r[key + "_rounds"],
                s=10,
                color=line.get_color(),
                alpha=0.5,
            )
    right.plot(rc, [r["ttft_p90"] for r in ratios], "^--", label="TTFT p90")
    values = [
        v for r in ratios for v in (r["ttft_p90"], *r["tokens_per_s_rounds"], *r["ttft_p50_rounds"])
    ]
    spread = max([abs(v - 1) for v in values] + [0.1]) * 1.3
    right.set_ylim(1 - spread, 1 + spread)
    for ax, title in (
        (left, "completion tokens/s (dots: rounds)"),
        (middle, "time to first token, ms"),
        (right, "gateway / direct (1 = same; dots: rounds)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.set_xlabel("concurrency")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylim(bottom=0)
    middle.set_ylim(bottom=0)
    fig.suptitle(f"vLLM CPU engine, direct vs through Portico — {sub}", fontsize=11)
    return _save(fig, path)


def routing(summary: dict[str, Any], path: Path, sub: str) -> Path:
    """Per concurrency and strategy: TTFT p50/p99, requests/s and prefix-cache hit rate
    as bars of the median over rounds, each round's value as a dot."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    rows = summary["rows"]
    labels = [f"{r['prefixes']} prefixes\n{r['strategy']}\nc={r['concurrency']}" for r in rows]
    xs = list(range(len(rows)))
    width = 0.38
    panels = (
        (axes[0], (("ttft_p50_ms", "p50"), ("ttft_p99_ms", "p99")), "time to first token, ms"),
        (axes[1], (("requests_per_s", "requests/s"),), "throughput, requests/s"),
        (axes[2], (("prefix_cache_hit_rate", "hit rate"),), "engines' prefix-cache hit rate"),
    )
    for ax, series, title in panels:
        for k, (key, name) in enumerate(series):
            offset = (k - (len(series) - 1) / 2) * width
            bars = ax.bar([x + offset for x in xs], [r[key] for r in rows], width, label=name)
            for x, r in zip(xs, rows, strict=True):
                dots = r[key + "_rounds"]
                ax.scatter([x + offset] * len(dots), dots, s=12, color="black", zorder=3)
            ax.bar_label(bars, fmt="%.0f" if key.endswith("_ms") else "%.2f", fontsize=7)
        ax.set_xticks(xs, labels, fontsize=8)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    cache = {w["prefixes"]: w["cache_ratio"] for w in summary.get("workloads", [])}
    ratios = "; ".join(
        f"{r['prefixes']} prefixes ({cache.get(r['prefixes'], float('nan')):.2f} x KV cache), "
        f"c={r['concurrency']}: TTFT p50 {r['ttft_p50_ms']:.2f}, p99 {r['ttft_p99_ms']:.2f}, "
        f"req/s {r['requests_per_s']:.2f}"
        for r in summary["ratios"]
    )
    fig.suptitle(
        f"round_robin vs affinity over two vLLM CPU engines (bars: median of rounds, dots: "
        f"rounds) — {sub}\naffinity / round_robin: {ratios}",
        fontsize=10,
    )
    return _save(fig, path)
