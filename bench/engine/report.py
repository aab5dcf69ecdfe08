"""The ``engine`` scenario's summary, Markdown, console table and plot."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.core import report as md
from bench.core.plot import concurrency_axis, dots, figure, save
from bench.core.stats import background_s, errors, ok_replies, percentiles_ms
from bench.core.versus import DIRECT, GATEWAY

OURS = ("engine_cpu_s", "gateway_cpu_s", "loadgen_cpu_s")
IGNORE_EOS_NOTE = (
    ", `ignore_eos: true` (every answer is exactly max_tokens long, as in vLLM's own benchmarks)"
)


def _tokens(replies: Sequence[dict[str, Any]]) -> int:
    return sum(r["completion_tokens"] or 0 for r in replies)


def _row(
    target: str, concurrency: int, points: list[dict[str, Any]], idle_cores: float
) -> dict[str, Any]:
    replies = ok_replies(points)
    tokens, wall_s = _tokens(replies), sum(p["wall_s"] for p in points)
    requests = sum(p["requests"] for p in points)
    ttft = percentiles_ms([r["first_token_us"] for r in replies if r["first_token_us"]])
    latency = percentiles_ms([r["total_us"] for r in replies])
    tpot = [
        (r["total_us"] - r["first_token_us"]) / (r["completion_tokens"] - 1)
        for r in replies
        if r["first_token_us"] and (r["completion_tokens"] or 0) > 1
    ]
    gateway_cpu_s = sum(p["gateway_cpu_s"] for p in points)
    engine_cpu_s = sum(p["engine_cpu_s"] for p in points)
    # The gateway's CPU per request above its idle rate; gateway target only.
    relay = 1000 * (gateway_cpu_s - idle_cores * wall_s) / requests if target == GATEWAY else None
    return {
        "target": target, "concurrency": concurrency, "requests": requests,
        "errors": sum(p["errors"] for p in points), "completion_tokens": tokens, "wall_s": wall_s,
        "tokens_per_s": tokens / wall_s if wall_s else math.nan,
        "tokens_per_s_rounds": [_tokens(ok_replies([p])) / p["wall_s"] for p in points],
        "ttft_p50_ms": ttft[0], "ttft_p90_ms": ttft[1], "ttft_p99_ms": ttft[2],
        "ttft_p50_ms_rounds": [
            percentiles_ms([r["first_token_us"] for r in ok_replies([p])])[0] for p in points
        ],
        "latency_p50_ms": latency[0], "latency_p90_ms": latency[1],
        # time per output token after the first, per request
        "tpot_p50_ms": statistics.median(tpot) / 1000 if tpot else math.nan,
        "engine_cpu_ms_per_token": 1000 * engine_cpu_s / tokens if tokens else math.nan,
        "gateway_cpu_cores": gateway_cpu_s / wall_s if wall_s else 0.0,
        "gateway_cpu_ms_per_request": relay,
        "loadgen_cpu_ms_per_request": 1000 * sum(p["loadgen_cpu_s"] for p in points) / requests,
        "background_cores": sum(background_s(p, OURS) for p in points) / wall_s if wall_s else 0.0,
        "rounds": [p["round"] for p in points],
    }  # fmt: skip


def _ratio(d: dict[str, Any], g: dict[str, Any]) -> dict[str, Any]:
    """gateway / direct at one concurrency, overall and per round."""

    def rounds(name: str) -> list[float]:
        return [a / b for a, b in zip(g[name], d[name], strict=True)]

    return {
        "concurrency": d["concurrency"],
        "tokens_per_s": g["tokens_per_s"] / d["tokens_per_s"],
        "tokens_per_s_rounds": rounds("tokens_per_s_rounds"),
        "ttft_p50": g["ttft_p50_ms"] / d["ttft_p50_ms"],
        "ttft_p50_rounds": rounds("ttft_p50_ms_rounds"),
        "ttft_p90": g["ttft_p90_ms"] / d["ttft_p90_ms"],
        "latency_p50": g["latency_p50_ms"] / d["latency_p50_ms"],
        "ttft_p50_added_ms": g["ttft_p50_ms"] - d["ttft_p50_ms"],
    }


def summarize(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for point in sorted(points, key=lambda p: p["round"]):
        groups[(point["concurrency"], point["target"])].append(point)
    # While the direct target runs, the gateway only idles: that is its idle CPU rate.
    idle = [p for p in points if p["target"] == DIRECT]
    idle_wall = sum(p["wall_s"] for p in idle)
    idle_cores = sum(p["gateway_cpu_s"] for p in idle) / idle_wall if idle_wall else 0.0
    order = {DIRECT: 0, GATEWAY: 1}
    keys = sorted(groups, key=lambda k: (k[0], order.get(k[1], 2)))
    rows = {key: _row(key[1], key[0], groups[key], idle_cores) for key in keys}
    pairs = [(row, rows[c, GATEWAY]) for (c, _), row in rows.items() if (c, GATEWAY) in rows]
    return {
        "rows": list(rows.values()),
        "ratios": [_ratio(d, g) for d, g in pairs if d["target"] == DIRECT],
        "gateway_idle_cores": idle_cores,
        **errors(points, keep=10),
    }


KEY: list[md.Column] = [
    ("c", lambda r: str(r["concurrency"])),
    ("tokens/s ratio", lambda r: f"**{r['tokens_per_s']:.3f}**"),
    ("per round", lambda r: md.joined(r["tokens_per_s_rounds"])),
    ("TTFT p50 ratio", lambda r: f"**{r['ttft_p50']:.3f}**"),
    ("per round", lambda r: md.joined(r["ttft_p50_rounds"])),
    ("TTFT p90 ratio", lambda r: md.f(r["ttft_p90"], 3)),
    ("TTFT p50 gateway minus direct (ms)", lambda r: md.f(r["ttft_p50_added_ms"], 1, signed=True)),
    ("latency p50 ratio", lambda r: md.f(r["latency_p50"], 3)),
]


DETAIL: list[md.Column] = [
    ("target", lambda r: r["target"]),
    ("c", KEY[0][1]),
    ("requests", lambda r: str(r["requests"])),
    ("errors", lambda r: str(r["errors"])),
    ("completion tokens", lambda r: str(r["completion_tokens"])),
    ("tokens/s", md.number("tokens_per_s", 1)),
    ("per round", lambda r: md.joined(r["tokens_per_s_rounds"], 1)),
    ("TTFT p50 ms", md.number("ttft_p50_ms", 0)),
    ("TTFT p90 ms", md.number("ttft_p90_ms", 0)),
    ("TTFT p50 per round", lambda r: md.joined(r["ttft_p50_ms_rounds"], 0)),
    ("latency p50 ms", md.number("latency_p50_ms", 0)),
    ("TPOT p50 ms", md.number("tpot_p50_ms", 1)),
    ("engine CPU ms/token", md.number("engine_cpu_ms_per_token", 1)),
    ("gateway CPU cores", md.number("gateway_cpu_cores", 3)),
    ("gateway CPU ms/req above idle", md.number("gateway_cpu_ms_per_request", 1)),
    ("background cores", md.number("background_cores", 2)),
]


def markdown(machine: dict[str, Any], config: dict[str, Any], summary: dict[str, Any]) -> str:
    pairs = zip(config["engine_concurrency"], config["engine_requests"], strict=True)
    return md.render(
        Path(__file__).with_name("report.md"),
        **md.real_engine_header(machine, config),
        wall_s=f"{config['engine_wall_s']:.0f}",
        errors=summary["errors"],
        engine_url=config["engine"]["url"],
        rounds=config["engine_rounds"],
        plan=", ".join(f"c={c}: {n}" for c, n in pairs),
        max_tokens=config["engine_max_tokens"],
        ignore_eos=IGNORE_EOS_NOTE if config["engine_ignore_eos"] else "",
        key=md.table(KEY, summary["ratios"]),
        detail=md.table(DETAIL, summary["rows"]),
        failures=md.failures(summary),
    )


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    md.show(console, "engine: gateway / direct (streamed)", KEY, summary["ratios"])


def plot(summary: dict[str, Any], path: Path, sub: str) -> Path:
    fig, (left, middle, right) = figure(3)
    rows, ratios = summary["rows"], summary["ratios"]
    for target, marker in ((DIRECT, "o"), (GATEWAY, "s")):
        if series := [r for r in rows if r["target"] == target]:
            cs = [r["concurrency"] for r in series]
            (line,) = left.plot(cs, [r["tokens_per_s"] for r in series], marker + "-", label=target)
            for r in series:
                dots(left, r["concurrency"], r["tokens_per_s_rounds"], line.get_color())
            (line,) = middle.plot(
                cs, [r["ttft_p50_ms"] for r in series], marker + "-", label=f"{target} p50"
            )
            p90 = [r["ttft_p90_ms"] for r in series]
            middle.plot(
                cs, p90, marker + "--", color=line.get_color(), alpha=0.6, label=f"{target} p90"
            )
    rc = [r["concurrency"] for r in ratios]
    right.axhline(1.0, color="gray", lw=1)
    for key, style, label in (("tokens_per_s", "o-", "tokens/s"), ("ttft_p50", "s-", "TTFT p50")):
        (line,) = right.plot(rc, [r[key] for r in ratios], style, label=label)
        for r in ratios:
            dots(right, r["concurrency"], r[key + "_rounds"], line.get_color())
    right.plot(rc, [r["ttft_p90"] for r in ratios], "^--", label="TTFT p90")
    values = [
        v for r in ratios for v in (r["ttft_p90"], *r["tokens_per_s_rounds"], *r["ttft_p50_rounds"])
    ]
    spread = max([abs(v - 1) for v in values] + [0.1]) * 1.3
    right.set_ylim(1 - spread, 1 + spread)
    concurrencies = sorted({r["concurrency"] for r in rows})
    for ax, title in (
        (left, "completion tokens/s (dots: rounds)"),
        (middle, "time to first token, ms"),
        (right, "gateway / direct (1 = same; dots: rounds)"),
    ):
        concurrency_axis(ax, concurrencies, title)
        ax.legend(fontsize=8)
        if ax is not right:
            ax.set_ylim(bottom=0)
    return save(fig, path, f"vLLM CPU engine, direct vs through Portico — {sub}")
