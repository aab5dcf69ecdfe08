"""``portico loadtest`` as a command: the sweep (measured in :mod:`loadtest.sweep`), then
its reports: the terminal table (rich when installed), the sizing conclusions,
``loadtest.json``, ``loadtest.md`` and ``loadtest.png`` (matplotlib, the ``loadtest``
extra)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from loadtest.sweep import Level, LoadTestConfig, choose, sweep

PLOT_NOTE = "loadtest.png not written: the plot needs matplotlib (pip install 'portico[loadtest]')"


COLUMNS = (
    "concurrency", "requests", "errors", "req/s", "tokens/s",
    "TTFT p50 ms", "TTFT p90 ms", "TTFT p99 ms",
    "latency p50 ms", "latency p90 ms", "latency p99 ms", "tokens/s per request p50",
)  # fmt: skip
# The same columns, short enough for a terminal (the caption gives the unit).
SHORT_COLUMNS = (
    "conc", "reqs", "errors", "req/s", "tok/s", "TTFT p50", "TTFT p90", "TTFT p99",
    "lat p50", "lat p90", "lat p99", "tok/s/req",
)  # fmt: skip


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table_rows(results: Sequence[Level]) -> list[tuple[str, ...]]:
    """One row of display strings per level, in :data:`COLUMNS` order."""
    rows = []
    for level in results:
        kinds = " ".join(f"{kind}:{n}" for kind, n in sorted(level.errors.items()))
        rows.append(
            (
                str(level.concurrency),
                str(level.requests),
                f"{level.error_count} ({kinds})" if kinds else "0",
                _num(level.requests_per_s, 2),
                _num(level.tokens_per_s),
                *(_num(level.ttft_ms[p], 0).replace(",", "") for p in ("p50", "p90", "p99")),
                *(_num(level.latency_ms[p], 0).replace(",", "") for p in ("p50", "p90", "p99")),
                _num(level.request_tokens_per_s_p50),
            )
        )
    return rows


def conclusions(results: Sequence[Level], config: LoadTestConfig) -> list[str]:
    """The sizing answer and warnings, one sentence each."""
    verdict = choose(results, config.ttft_slo_ms)
    lines = []
    if verdict.best is not None:
        best = verdict.best
        lines.append(
            f"Most tokens/s: concurrency {best.concurrency} ({best.tokens_per_s:,.1f} tokens/s,"
            f" TTFT p99 {_num(best.ttft_ms['p99'], 0)} ms)."
        )
    if config.ttft_slo_ms is not None:
        fit = verdict.within_slo
        lines.append(
            f"TTFT p99 <= {config.ttft_slo_ms:g} ms up to concurrency {fit.concurrency}"
            f" ({fit.tokens_per_s:,.1f} tokens/s): one deployment takes about that many"
            " concurrent streams."
            if fit is not None
            else f"No level kept TTFT p99 <= {config.ttft_slo_ms:g} ms without errors."
        )
    for level in results:
        # The client, not the deployment, was the limit: its numbers understate the server.
        if level.wall_s > 0 and level.client_cpu_s / level.wall_s > 0.8:
            lines.append(
                f"Concurrency {level.concurrency}: this client used"
                f" {level.client_cpu_s / level.wall_s:.0%} of a core; run it on another machine."
            )
        if level.without_usage:
            lines.append(
                f"Concurrency {level.concurrency}: {level.without_usage} streams had no usage"
                " chunk; their tokens were counted as content chunks."
            )
        examples = {s["error"]: s["detail"] for s in level.samples if s["error"] is not None}
        for kind, detail in sorted(examples.items()):
            lines.append(f"Concurrency {level.concurrency}: {kind}, for example: {detail[:200]}")
        if level.cache_hits:
            lines.append(
                f"Concurrency {level.concurrency}: {level.cache_hits} answers came from a cache."
            )
    return lines


def to_json(results: Sequence[Level], config: LoadTestConfig) -> dict[str, Any]:
    verdict = choose(results, config.ttft_slo_ms)
    settings = {k: v for k, v in asdict(config).items() if k != "api_key"}
    return {
        "config": {**settings, "requests": [config.requests_at(c) for c in config.concurrency]},
        "levels": [{**asdict(level), "error_count": level.error_count} for level in results],
        "best_tokens_per_s_concurrency": verdict.best.concurrency if verdict.best else None,
        "ttft_slo_ms": config.ttft_slo_ms,
        "within_ttft_slo_concurrency": verdict.within_slo.concurrency
        if verdict.within_slo
        else None,
        "conclusions": conclusions(results, config),
    }


def to_markdown(results: Sequence[Level], config: LoadTestConfig) -> str:
    rows = [COLUMNS, tuple("---" for _ in COLUMNS), *table_rows(results)]
    api = "chat completions" if config.api == "chat" else "completions"
    return "\n".join(
        [
            f"# portico loadtest: {config.model}",
            "",
            f"`{config.url}`, streamed {api}, max_tokens {config.max_tokens},"
            f" closed loop; requests per level:"
            f" {', '.join(str(config.requests_at(c)) for c in config.concurrency)}.",
            "",
            *("| " + " | ".join(row) + " |" for row in rows),
            "",
            *(f"- {line}" for line in conclusions(results, config)),
            "",
        ]
    )


def print_table(results: Sequence[Level], config: LoadTestConfig) -> None:
    """The table on the terminal: rich when installed, else aligned plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        rows = [COLUMNS, *table_rows(results)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        for row in rows:
            print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    else:
        table = Table(
            title=f"portico loadtest: {config.model} at {config.url}",
            caption="times in ms; tok/s/req: median tokens/s of one stream",
        )
        for name in SHORT_COLUMNS:
            table.add_column(name, justify="right", no_wrap=True)
        for row in table_rows(results):
            table.add_row(*row)
        console = Console()
        if not console.is_terminal:
            # Piped to a file: rich would fold the table to 80 columns; nothing wraps a file.
            console = Console(width=160)
        console.print(table)
    for line in conclusions(results, config):
        print(line)


def plot(results: Sequence[Level], config: LoadTestConfig, path: Path) -> bool:
    """Tokens/s and TTFT p50/p99 against concurrency; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    xs = [level.concurrency for level in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(xs, [level.tokens_per_s for level in results], marker="o")
    left.set_ylim(bottom=0)
    left.set_title("throughput")
    left.set_ylabel("completion tokens/s (all streams)")
    right.plot(xs, [level.ttft_ms["p50"] for level in results], marker="o", label="TTFT p50")
    right.plot(xs, [level.ttft_ms["p99"] for level in results], marker="o", label="TTFT p99")
    if config.ttft_slo_ms is not None:
        right.axhline(config.ttft_slo_ms, color="tab:red", linestyle="--", label="TTFT target")
    right.set_ylim(bottom=0)
    right.set_title("time to first token")
    right.set_ylabel("ms")
    right.legend()
    for axes in (left, right):
        if len(xs) > 1 and xs[-1] / xs[0] >= 8:
            axes.set_xscale("log", base=2)
        axes.set_xticks(xs, [str(x) for x in xs])
        axes.set_xlabel("concurrent streams")
        axes.grid(True, alpha=0.3)
    fig.suptitle(f"{config.model} at {config.url}, max_tokens {config.max_tokens}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_reports(results: Sequence[Level], config: LoadTestConfig, out: Path) -> list[str]:
    """``loadtest.json``, ``loadtest.md`` and ``loadtest.png`` in ``out``; returns what to tell
    the user about them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "loadtest.json").write_text(json.dumps(to_json(results, config), indent=2) + "\n")
    (out / "loadtest.md").write_text(to_markdown(results, config))
    wrote = ["loadtest.json", "loadtest.md"]
    notes = []
    if plot(results, config, out / "loadtest.png"):
        wrote.append("loadtest.png")
    else:
        notes.append(PLOT_NOTE)
    return [f"Wrote {', '.join(wrote)} to {out}", *notes]


def run(
    config: LoadTestConfig, out: Path, transport: httpx.AsyncBaseTransport | None = None
) -> int:
    """The whole command: sweep, print, write; 1 if any request failed, else 0."""

    def progress(level: Level) -> None:
        print(
            f"concurrency {level.concurrency}: {level.ok}/{level.requests} ok,"
            f" {level.tokens_per_s:,.1f} tokens/s in {level.wall_s:.1f} s",
            flush=True,
        )

    results = asyncio.run(sweep(config, progress, transport))
    print_table(results, config)
    for line in write_reports(results, config, out):
        print(line)
    failed = sum(level.error_count for level in results)
    if failed:
        print(f"portico: {failed} requests failed (see the errors column)", file=sys.stderr)
    return 1 if failed else 0
