"""The ``routing`` scenario's summary, Markdown, console table and plot."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.core import report as md
from bench.core.plot import bars, figure, save
from bench.core.stats import background_s, errors, percentiles_ms

ROUND_ROBIN = "round_robin"
AFFINITY = "affinity"
STRATEGIES = (ROUND_ROBIN, AFFINITY)
# Per-round values with an affinity / round_robin ratio, and all that get a median.
RATIOS = ("ttft_p50_ms", "ttft_p99_ms", "requests_per_s", "tokens_per_s")
METRICS = (*RATIOS, "latency_p50_ms", "latency_p99_ms", "prefix_cache_hit_rate")
OURS = ("engines_cpu_s", "gateway_cpu_s", "loadgen_cpu_s")


def _delta(point: dict[str, Any], counter: str) -> list[float]:
    """Per engine, how much ``counter`` grew during the point."""
    pairs = zip(point["engines_before"], point["engines_after"], strict=True)
    return [after[counter] - before[counter] for before, after in pairs]


def point_row(point: dict[str, Any]) -> dict[str, Any]:
    """One round of one strategy: percentiles, throughput, what the engines saw."""
    ok = [r for r in point["replies"] if r["error"] is None]
    ttft = percentiles_ms([r["first_token_us"] for r in ok if r["first_token_us"] is not None])
    latency = percentiles_ms([r["total_us"] for r in ok])
    wall = point["wall_s"]
    queries = sum(_delta(point, "prefix_cache_queries"))
    hits = sum(_delta(point, "prefix_cache_hits"))
    return {
        "prefixes": point.get("prefixes", 8), "strategy": point["strategy"],
        "concurrency": point["concurrency"], "round": point["round"],
        "requests": len(point["replies"]), "errors": point["errors"],
        "ttft_p50_ms": ttft[0], "ttft_p99_ms": ttft[2],
        "latency_p50_ms": latency[0], "latency_p99_ms": latency[2],
        "requests_per_s": len(ok) / wall,
        "tokens_per_s": sum(r["completion_tokens"] or 0 for r in ok) / wall,
        "prefix_cache_hit_rate": hits / queries if queries else math.nan,
        "prompt_tokens": queries,
        "engine_requests": [int(n) for n in _delta(point, "chat_requests")],
        "wall_s": wall,
        "background_cores": background_s(point, OURS) / wall,
    }  # fmt: skip


def _median_row(members: list[dict[str, Any]]) -> dict[str, Any]:
    first = members[0]
    row: dict[str, Any] = {k: first[k] for k in ("prefixes", "strategy", "concurrency")}
    row["rounds"] = len(members)
    for name in METRICS:
        row[name] = statistics.median(m[name] for m in members)
        row[name + "_rounds"] = [m[name] for m in members]
    row["engine_requests"] = [sum(m["engine_requests"][i] for m in members) for i in range(2)]
    row["requests"] = sum(m["requests"] for m in members)
    row["errors"] = sum(m["errors"] for m in members)
    row["background_cores"] = statistics.median(m["background_cores"] for m in members)
    return row


def _ratio(
    medians: dict[str, dict[str, Any]], rounds: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """affinity / round_robin of the medians, and of each round pair (same workload, run
    back to back), for the spread."""
    entry = {k: medians[AFFINITY][k] for k in ("prefixes", "concurrency")}
    for name in RATIOS:
        entry[name] = medians[AFFINITY][name] / medians[ROUND_ROBIN][name]
        base = {m["round"]: m[name] for m in rounds[ROUND_ROBIN]}
        entry[name + "_rounds"] = [
            m[name] / base[m["round"]] for m in rounds[AFFINITY] if m["round"] in base
        ]
    return entry


def summarize(
    points: Sequence[dict[str, Any]], workloads: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """Per workload (number of prefixes), concurrency and strategy, the median over rounds;
    ratios affinity / round_robin. ``workloads``: the scenario's description of each
    (prompt tokens, KV cache), copied into the summary."""
    rounds = [point_row(p) for p in points]
    groups: dict[tuple[int, int], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for one in rounds:
        groups[one["prefixes"], one["concurrency"]][one["strategy"]].append(one)
    rows: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    for key in sorted(groups):
        medians = {s: _median_row(groups[key][s]) for s in STRATEGIES if groups[key][s]}
        rows += medians.values()
        if len(medians) == len(STRATEGIES):
            ratios.append(_ratio(medians, groups[key]))
    return {
        "workloads": list(workloads),
        "rows": rows,
        "ratios": ratios,
        "rounds": rounds,
        **errors(points),
    }


def fit(workload: dict[str, Any]) -> str:
    """How the workload's prompts compare with one engine's KV cache."""
    if workload["cache_ratio"] <= 1:
        return "fits one engine"
    if workload["cache_ratio"] / 2 <= 1:
        return "exceeds one engine; half fits"
    return "exceeds one engine, even half"


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.0f}%"


def _split(row: dict[str, Any]) -> str:
    return " / ".join(str(n) for n in row["engine_requests"])


def _ratio_cell(name: str) -> Any:
    return lambda r: f"**{r[name]:.2f}** ({md.joined(r[name + '_rounds'])})"


PREFIXES: md.Column = ("prefixes", lambda r: str(r["prefixes"]))
STRATEGY: md.Column = ("strategy", lambda r: f"`{r['strategy']}`")
C: md.Column = ("c", lambda r: str(r["concurrency"]))
HIT: md.Column = ("prefix-cache hit rate", lambda r: _pct(r["prefix_cache_hit_rate"]))
BACKGROUND: md.Column = ("background cores", md.number("background_cores"))
WORKLOADS: list[md.Column] = [
    ("prefixes", lambda w: f"{w['prefixes']}{' (auto)' if w['auto'] else ''}"),
    ("prompt tokens each", lambda w: f"{min(w['prompt_tokens'])}-{max(w['prompt_tokens'])}"),
    ("all prompts, tokens", lambda w: str(w["total_prompt_tokens"])),
    (
        "KV cache per engine, tokens",
        lambda w: f"{w['kv_cache_tokens']} ({w['kv_cache_blocks']} x {w['block_size']})",
    ),
    ("all prompts / KV cache", lambda w: f"**{w['cache_ratio']:.2f}**"),
    (
        "cached blocks of all prompts / cache blocks",
        lambda w: f"{w['prompt_blocks']} / {w['kv_cache_blocks']}",
    ),
    ("fit", fit),
    ("requests per round", lambda w: str(w["requests"])),
]
MEDIANS: list[md.Column] = [
    PREFIXES, STRATEGY, C,
    ("requests", lambda r: f"{r['requests']} ({r['errors']} failed)"),
    *((f"{name} {p} ms", md.number(f"{key}_{p}_ms", 0))
      for name, key in (("TTFT", "ttft"), ("latency", "latency")) for p in ("p50", "p99")),
    ("requests/s", md.number("requests_per_s")),
    ("completion tokens/s", md.number("tokens_per_s", 1)),
    HIT, ("requests on A / B (all rounds)", _split), BACKGROUND,
]  # fmt: skip
EVERY_ROUND: list[md.Column] = [
    PREFIXES, ("pair", lambda r: str(r["round"] + 1)), STRATEGY, C,
    MEDIANS[4], MEDIANS[5], MEDIANS[6], MEDIANS[8], ("hit rate", HIT[1]),
    ("prompt tokens", lambda r: f"{r['prompt_tokens']:.0f}"), ("requests on A / B", _split),
    ("wall s", md.number("wall_s", 1)), BACKGROUND,
]  # fmt: skip


def _ratio_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratios, each with its workload's cache ratio and both strategies' hit rates."""
    cache = {w["prefixes"]: md.f(w["cache_ratio"]) for w in summary["workloads"]}
    hit = {(r["prefixes"], r["concurrency"], r["strategy"]): r for r in summary["rows"]}
    found = []
    for r in summary["ratios"]:
        rates = (
            hit[r["prefixes"], r["concurrency"], s]["prefix_cache_hit_rate"] for s in STRATEGIES
        )
        found.append(
            r | {"cache": cache.get(r["prefixes"], "?"), "hits": " / ".join(map(_pct, rates))}
        )
    return found


RATIO_COLUMNS: list[md.Column] = [
    PREFIXES,
    ("prompts / KV cache", lambda r: r["cache"]),
    C,
    ("TTFT p50", _ratio_cell("ttft_p50_ms")),
    ("TTFT p99", _ratio_cell("ttft_p99_ms")),
    ("requests/s", _ratio_cell("requests_per_s")),
    ("completion tokens/s", _ratio_cell("tokens_per_s")),
    ("hit rate round_robin / affinity", lambda r: r["hits"]),
]


def _kv(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, str]:
    kv = summary["workloads"][0] if summary["workloads"] else {}
    blocks = config.get("routing_kv_blocks", 0)
    text = f"{kv['kv_cache_tokens']} tokens ({kv['kv_cache_blocks']} blocks of {kv['block_size']})"
    how = (
        f"`--num-gpu-blocks-override={blocks}` (`--routing-kv-blocks`), not the engine's "
        "1 GiB default, so a workload bigger than the cache reaches eviction within a round"
    )
    return {
        "kv_text": text if kv else "?",
        "kv_how": how if blocks else "the engine's default (1 GiB on CPU)",
    }


def _options(config: dict[str, Any]) -> str:
    names = ("rounds", "prefixes", "requests", "kv_blocks", "concurrency", "max_tokens")
    values = {n: config[f"routing_{n}"] for n in names}
    return ", ".join(
        f"`--routing-{n.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}`"
        for n, v in values.items()
    )


def markdown(machine: dict[str, Any], config: dict[str, Any], summary: dict[str, Any]) -> str:
    return md.render(
        Path(__file__).with_name("report.md"),
        nproc=machine["nproc"],
        quick=" (`--quick`: a smoke run, the numbers mean nothing)" if config["quick"] else "",
        machine=md.machine_lines(machine),
        engine_argv=" ".join(config["engines"]["a"]["argv"]),
        model=config["model"],
        startup_s=f"{config['startup_s']:.0f}",
        **_kv(config, summary),
        measured_s=f"{config['measured_wall_s']:.0f}",
        scenario_s=f"{config['scenario_wall_s']:.0f}",
        errors=summary["errors"],
        max_tokens=config["routing_max_tokens"],
        concurrency=", ".join(str(c) for c in config["routing_concurrency"]),
        requests=", ".join(
            f"{w['requests']} ({w['prefixes']} prefixes)" for w in summary["workloads"]
        ),
        workloads=md.table(WORKLOADS, summary["workloads"]),
        rounds=config["routing_rounds"],
        ratios=md.table(RATIO_COLUMNS, _ratio_rows(summary)),
        medians=md.table(MEDIANS, summary["rows"]),
        every_round=md.table(EVERY_ROUND, summary["rounds"]),
        options=_options(config),
        failures=md.failures(summary) + ("\n" if summary["error_samples"] else ""),
    )


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    md.show(console, "routing: affinity / round_robin", RATIO_COLUMNS, _ratio_rows(summary))


def plot(summary: dict[str, Any], path: Path, sub: str) -> Path:
    """Per concurrency and strategy: TTFT p50/p99, requests/s and prefix-cache hit rate
    as bars of the median over rounds, each round's value as a dot."""
    fig, axes = figure(3)
    rows = summary["rows"]
    labels = [f"{r['prefixes']} prefixes\n{r['strategy']}\nc={r['concurrency']}" for r in rows]
    panels = (
        (axes[0], (("ttft_p50_ms", "p50"), ("ttft_p99_ms", "p99")), "time to first token, ms"),
        (axes[1], (("requests_per_s", "requests/s"),), "throughput, requests/s"),
        (axes[2], (("prefix_cache_hit_rate", "hit rate"),), "engines' prefix-cache hit rate"),
    )
    for ax, series, title in panels:
        values = {name: [r[key] for r in rows] for key, name in series}
        rounds = {name: [r[key + "_rounds"] for r in rows] for key, name in series}
        bars(ax, labels, values, title, "", rounds=rounds)
        for container, (key, _) in zip(ax.containers, series, strict=True):
            ax.bar_label(container, fmt="%.0f" if key.endswith("_ms") else "%.2f", fontsize=7)
    cache = {w["prefixes"]: w["cache_ratio"] for w in summary.get("workloads", [])}
    ratios = "; ".join(
        f"{r['prefixes']} prefixes ({cache.get(r['prefixes'], math.nan):.2f} x KV cache), "
        f"c={r['concurrency']}: TTFT p50 {r['ttft_p50_ms']:.2f}, p99 {r['ttft_p99_ms']:.2f}, "
        f"req/s {r['requests_per_s']:.2f}"
        for r in summary["ratios"]
    )
    title = "round_robin vs affinity over two vLLM CPU engines (bars: median of rounds, dots: "
    title += f"rounds) — {sub}"
    return save(fig, path, f"{title}\naffinity / round_robin: {ratios}", fontsize=10)
