"""The ``cache`` scenario's summary, Markdown, console table and plot."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from bench.core import report as md
from bench.core.plot import bars, figure, save
from bench.core.stats import background_s, percentiles_ms, ratio

LOOKUP_METRIC = "portico_cache_lookup_seconds"
# The kinds of request, in report order, with what each one is and its colour in the plot.
KINDS = {
    "miss": ("non-stream, first time: x-cache miss, the engine answers", "tab:red"),
    "hit": ("non-stream, same request again: x-cache hit, answered from Redis", "tab:green"),
    "stream-miss": (
        "streamed, first time (other prompts): miss, relayed from the engine",
        "tab:orange",
    ),
    "stream-hit": ("streamed, same request again: hit, the recorded events replayed", "tab:blue"),
}
OURS = ("engine_cpu_s", "gateway_cpu_s", "loadgen_cpu_s")


def _row(kind: str, replies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in replies if r["error"] is None]
    totals = [r["total_us"] for r in ok]
    p50, p90, p99 = percentiles_ms(totals)
    stream = kind.startswith("stream")
    fb = percentiles_ms([r["first_byte_us"] for r in ok if r["first_byte_us"] is not None])
    ft = percentiles_ms([r["first_token_us"] for r in ok if r["first_token_us"] is not None])
    tokens = [r["completion_tokens"] for r in ok if r["completion_tokens"] is not None]
    return {
        "kind": kind, "requests": len(replies), "errors": len(replies) - len(ok),
        "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
        "mean_ms": statistics.fmean(totals) / 1000 if totals else math.nan,
        "max_ms": max(totals) / 1000 if totals else math.nan,
        "first_byte_p50_ms": fb[0] if stream else None,
        "first_byte_p99_ms": fb[2] if stream else None,
        "first_token_p50_ms": ft[0] if stream else None,
        "first_token_p99_ms": ft[2] if stream else None,
        "completion_tokens_mean": statistics.fmean(tokens) if tokens else None,
        # streamed: chunks with non-empty delta.content
        "content_chunks_mean": statistics.fmean(r["pieces"] for r in ok) if stream and ok else None,
    }  # fmt: skip


def _histogram(text: str) -> tuple[dict[float, float], float, float]:
    """(cumulative bucket counts by upper bound, count, sum) of the lookup histogram."""
    buckets: dict[float, float] = defaultdict(float)
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples if family.name == LOOKUP_METRIC else ():
            if sample.name.endswith("_bucket"):
                buckets[float(sample.labels["le"])] += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
    return dict(buckets), count, total


def bucket_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the largest finite bucket: its bound, as Prometheus
            span = buckets[bound] - lower_count
            return lower_bound + (bound - lower_bound) * (
                (rank - lower_count) / span if span > 0 else 1.0
            )
        lower_bound, lower_count = bound, buckets[bound]
    return None


def lookup_histogram(before: str, after: str) -> dict[str, Any]:
    """The gateway's portico_cache_lookup_seconds during the measured phase (after - before)."""
    (b0, c0, s0), (b1, c1, s1) = _histogram(before), _histogram(after)
    buckets = {le: b1[le] - b0.get(le, 0.0) for le in b1}
    count, total = c1 - c0, s1 - s0
    p50, p99 = bucket_quantile(0.5, buckets), bucket_quantile(0.99, buckets)
    return {
        "count": count,
        "sum_s": total,
        "mean_ms": 1000 * total / count if count else None,
        "p50_ms_estimate": None if p50 is None else 1000 * p50,
        "p99_ms_estimate": None if p99 is None else 1000 * p99,
        "buckets": {("+Inf" if math.isinf(le) else f"{le:g}"): n for le, n in buckets.items()},
    }


def summarize(point: dict[str, Any]) -> dict[str, Any]:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for reply in point["replies"]:
        by_kind[reply["kind"]].append(reply)
    return {
        "rows": {kind: _row(kind, by_kind[kind]) for kind in KINDS if by_kind[kind]},
        "lookup": lookup_histogram(point["metrics_before"], point["metrics_after"]),
        "background_cores": background_s(point, OURS) / point["wall_s"],
        **{
            k: point[k]
            for k in ("errors", "error_samples", "wall_s", "gateway_cpu_s", "engine_cpu_s")
        },
    }


def _key_rows(rows: dict[str, Any]) -> list[list[str]]:
    """Per comparison: miss and hit p50 and p99 and their ratios."""
    found = []
    for label, miss, hit, name in (
        ("non-stream: total time", "miss", "hit", ""),
        ("streamed: first token", "stream-miss", "stream-hit", "first_token_"),
        ("streamed: total time", "stream-miss", "stream-hit", ""),
    ):
        cells = [label]
        for p in ("p50", "p99"):
            a, b = (rows.get(k, {}).get(f"{name}{p}_ms") for k in (miss, hit))
            cells += [md.f(a), md.f(b), md.x(ratio(a, b), 0)]
        found.append(cells)
    return found


KEY = md.listed(
    "", "miss p50", "hit p50", "miss / hit p50", "miss p99", "hit p99", "miss / hit p99"
)
DETAIL: list[md.Column] = [
    ("kind", lambda r: f"`{r['kind']}`"),
    ("requests", lambda r: str(r["requests"])),
    ("errors", lambda r: str(r["errors"])),
    *((f"{n} ms", md.number(f"{n}_ms")) for n in ("p50", "p90", "p99", "max", "mean")),
    ("first byte p50 ms", lambda r: md.f(r["first_byte_p50_ms"])),
    ("first token p50 ms", lambda r: md.f(r["first_token_p50_ms"])),
    ("first token p99 ms", lambda r: md.f(r["first_token_p99_ms"])),
    ("completion tokens (mean)", lambda r: md.f(r["completion_tokens_mean"], 1)),
    ("content chunks (mean)", lambda r: md.f(r["content_chunks_mean"], 1)),
]


def _lookup_line(lookup: dict[str, Any]) -> str:
    return (
        f"Over the measured phase the gateway observed **{lookup['count']:.0f}** found lookups "
        f"(one per hit), mean **{md.f(lookup['mean_ms'], 3)} ms**; from its buckets (0.5, 1, "
        f"2.5, 5 ms, ...; linear interpolation as Prometheus' `histogram_quantile`) p50 ≈ "
        f"{md.f(lookup['p50_ms_estimate'], 3)} ms, p99 ≈ {md.f(lookup['p99_ms_estimate'], 3)} ms. "
        "Buckets (cumulative): "
        + ", ".join(f"le {le}: {n:.0f}" for le, n in lookup["buckets"].items())
        + "."
    )


def markdown(machine: dict[str, Any], config: dict[str, Any], summary: dict[str, Any]) -> str:
    rows, repeats = summary["rows"], config["cache_hit_repeats"]
    return md.render(
        Path(__file__).with_name("report.md"),
        **md.real_engine_header(machine, config),
        wall_s=f"{summary['wall_s']:.0f}",
        errors=summary["errors"],
        background=f"{summary['background_cores']:.2f}",
        redis_prefix=config["redis_prefix"],
        max_tokens=config["cache_max_tokens"],
        prompts=config["cache_prompts"],
        stream_prompts=config["cache_stream_prompts"],
        again="again" if repeats == 1 else f"again {repeats} times",
        repeats=repeats,
        key=md.table(KEY, _key_rows(rows)),
        lookup=_lookup_line(summary["lookup"]),
        detail=md.table(DETAIL, rows.values()),
        kinds="\n".join(f"- `{kind}`: {text}" for kind, (text, _) in KINDS.items() if kind in rows),
        failures=md.failures(summary, "Failed checks") + ("\n" if summary["error_samples"] else ""),
    )


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    md.show(console, "cache: miss vs hit (ms, client-side)", KEY, _key_rows(summary["rows"]))
    console.print(_lookup_line(summary["lookup"]), markup=False, highlight=False)


def plot(replies: Sequence[dict[str, Any]], summary: dict[str, Any], path: Path, sub: str) -> Path:
    fig, (left, middle, right) = figure(3)
    ok = [r for r in replies if r["error"] is None]
    # Every request, in the order sent: misses take the engine's time, hits do not.
    for kind, (_, color) in KINDS.items():
        if points := [(i, r["total_us"] / 1000) for i, r in enumerate(ok) if r["kind"] == kind]:
            order, ms = zip(*points, strict=True)
            left.scatter(order, ms, s=14, color=color, label=kind)
    left.set(
        yscale="log",
        xlabel="request # (sequential)",
        ylabel="ms (log)",
        title="every request: total time",
    )
    left.legend(fontsize=8)
    left.grid(True, alpha=0.3)
    rows = summary["rows"]
    kinds = [k for k in KINDS if k in rows]
    miss, hit = rows.get("miss"), rows.get("hit")
    title = "total time p50 / p99" + (
        f" — miss/hit p50 {miss['p50_ms'] / hit['p50_ms']:.0f}x" if miss and hit else ""
    )
    series = {p: [rows[k][f"{p}_ms"] for k in kinds] for p in ("p50", "p99")}
    xs = bars(middle, kinds, series, title, "ms (log)", log=True)
    for at, k in zip(xs, kinds, strict=True):
        middle.annotate(
            f"{rows[k]['p50_ms']:.1f}", (at - 0.2, rows[k]["p50_ms"]), ha="center", fontsize=7
        )
    streamed = [k for k in kinds if k.startswith("stream")]
    series = {
        "first token p50": [rows[k]["first_token_p50_ms"] for k in streamed],
        "total p50": [rows[k]["p50_ms"] for k in streamed],
    }
    mean = summary["lookup"]["mean_ms"]
    lookup = f"\n(gateway lookup mean {mean:.2f} ms)" if mean is not None else ""
    bars(right, streamed, series, f"streamed: first token and total{lookup}", "ms (log)", log=True)
    return save(fig, path, f"Portico cache on the real engine: hit vs miss — {sub}")
