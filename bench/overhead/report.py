"""The ``overhead`` scenario's results: per-round points folded into one row per target x
mode x load (a closed-loop concurrency, or an open-loop rate), its Markdown and console
summary and plot."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from rich.console import Console

from bench.core import report as md
from bench.core.plot import bars, concurrency_axis, figure, save
from bench.core.stats import background_s, percentiles_ms, ratio

DIRECT = "direct"
GW_AIOHTTP = "gateway-aiohttp"
GW_2W = "gateway-2workers"
MINIMAL = "minimal-proxy"
DESCRIPTIONS = {
    DIRECT: "load generator -> fake upstream (no proxy; the baseline)",
    GW_AIOHTTP: "-> Portico (every feature on) -> fake upstream",
    GW_2W: "-> Portico as gateway-aiohttp, but `portico gateway serve --workers 2` "
    "(closed-loop non-streamed points only; CPU and RSS summed over master and workers)",
    MINIMAL: "-> bench/overhead/minimal_proxy.py (raw ASGI + aiohttp, forwards bytes) -> "
    "fake upstream",
}


# One line of the results: a target x mode x load, every round pooled. CPU figures are ms
# per request (= s per 1000); ``rate`` is the open-loop requests/s, 0 for a closed loop.
Row = dict[str, Any]


def cpu_range(row: Row) -> str:
    return f"{min(row['target_cpu_ms_rounds']):.3f} to {max(row['target_cpu_ms_rounds']):.3f}"


def added(row: Row, p99: bool = False) -> str:
    return (
        "—" if row["target"] == DIRECT else md.f(row[f"added_p{99 if p99 else 50}_ms"], signed=True)
    )


def background(point: dict[str, Any]) -> float:
    """Busy CPU of everything else; for direct the upstream is the target: count it once."""
    ours = ["target_cpu_s", "loadgen_cpu_s"] + (
        [] if point["target"] == DIRECT else ["upstream_cpu_s"]
    )
    return background_s(point, ours)


def _row(key: tuple[bool, float, int, str], points: list[dict[str, Any]]) -> Row:
    stream, rate, concurrency, target = key
    requests, wall_s = sum(p["requests"] for p in points), sum(p["wall_s"] for p in points)
    p50, p90, p99 = percentiles_ms([v for p in points for v in p["latencies_us"]])
    first = [v for p in points for v in p["first_chunk_us"]]
    fc50, _, fc99 = percentiles_ms(first) if first else (None, None, None)

    def per_request(name: str) -> float:
        return float(1000.0 * sum(float(p[name]) for p in points) / requests)

    return {
        "target": target, "stream": stream, "concurrency": concurrency, "rate": rate,
        "requests": requests, "errors": sum(p["errors"] for p in points), "rps": requests / wall_s,
        "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
        "first_chunk_p50_ms": fc50, "first_chunk_p99_ms": fc99,
        "target_cpu_ms": per_request("target_cpu_s"),
        "target_cpu_ms_rounds": [1000 * p["target_cpu_s"] / p["requests"] for p in points],
        "upstream_cpu_ms": per_request("upstream_cpu_s"),
        "loadgen_cpu_ms": per_request("loadgen_cpu_s"),
        "target_rss_mb": max(p["target_rss_mb"] for p in points),
        "background_cores": sum(map(background, points)) / wall_s,
        "added_p50_ms": None, "added_p99_ms": None,
    }  # fmt: skip


def summarize(points: Iterable[dict[str, Any]], target_order: Sequence[str]) -> list[Row]:
    """Rows ordered by mode, rate, concurrency, then ``target_order``; adds p50 and p99
    deltas vs direct under the same load."""
    groups: dict[tuple[bool, float, int, str], list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        groups[(p["stream"], p.get("rate", 0.0), p["concurrency"], p["target"])].append(p)
    rank = {name: i for i, name in enumerate(target_order)}
    keys = sorted(groups, key=lambda k: (k[0], k[1], k[2], rank.get(k[3], len(rank))))
    rows = [_row(key, groups[key]) for key in keys]
    direct = {(r["stream"], r["rate"], r["concurrency"]): r for r in rows if r["target"] == DIRECT}
    for row in rows:
        if (base := direct.get((row["stream"], row["rate"], row["concurrency"]))) is not None:
            row["added_p50_ms"] = row["p50_ms"] - base["p50_ms"]
            row["added_p99_ms"] = row["p99_ms"] - base["p99_ms"]
    return rows


def closed_loop(rows: Iterable[Row]) -> list[Row]:
    """Non-streamed closed-loop rows (the concurrency sweep)."""
    return [r for r in rows if not r["stream"] and not r["rate"]]


def open_loop(rows: Iterable[Row]) -> list[Row]:
    """Non-streamed open-loop rows (fixed request rates)."""
    return [r for r in rows if not r["stream"] and r["rate"]]


def by_concurrency(rows: Sequence[Row]) -> list[dict[str, Row]]:
    """Per closed-loop concurrency, its rows by target (``"c"``: any one of them)."""
    found: dict[int, dict[str, Row]] = defaultdict(dict)
    for r in closed_loop(rows):
        found[r["concurrency"]][r["target"]] = r
    return [found[c] | {"c": next(iter(found[c].values()))} for c in sorted(found)]


def _cpu(group: dict[str, Row], target: str) -> float | None:
    return group[target]["target_cpu_ms"] if target in group else None


def _cell(target: str) -> md.Column:
    def cell(g: dict[str, Row]) -> str:
        r = g.get(target)
        return "—" if r is None else f"**{r['target_cpu_ms']:.3f}** ({cpu_range(r)})"

    return target, cell


def _gateway_minus_minimal(g: dict[str, Row]) -> str:
    one, two = _cpu(g, GW_AIOHTTP), _cpu(g, MINIMAL)
    return md.f(None if one is None or two is None else one - two, 3)


KEY: list[md.Column] = [
    ("c", lambda g: str(g["c"]["concurrency"])),
    *(_cell(t) for t in (GW_AIOHTTP, MINIMAL)),
    ("direct (upstream alone)", _cell(DIRECT)[1]),
    ("aiohttp / minimal", lambda g: md.x(ratio(_cpu(g, GW_AIOHTTP), _cpu(g, MINIMAL)))),
    ("gateway-aiohttp minus minimal", _gateway_minus_minimal),
]
COMMON: list[md.Column] = [
    ("target", lambda r: r["target"]),
    ("c", lambda r: str(r["concurrency"])),
    ("requests", lambda r: str(r["requests"])),
    ("errors", lambda r: str(r["errors"])),
]
CPU: md.Column = ("target CPU ms/req", md.number("target_cpu_ms", 3))
BACKGROUND: md.Column = ("background cores", md.number("background_cores"))
P50_P90_P99: list[md.Column] = [(f"{p} ms", md.number(f"{p}_ms")) for p in ("p50", "p90", "p99")]
CLOSED: list[md.Column] = [
    *COMMON,
    ("RPS", md.number("rps", 0)),
    *P50_P90_P99,
    ("+p50 vs direct", added),
    CPU,
    ("range over rounds", cpu_range),
    (
        "upstream CPU ms/req",
        lambda r: "(is the target)" if r["target"] == DIRECT else md.f(r["upstream_cpu_ms"], 3),
    ),
    ("target RSS MB", md.number("target_rss_mb", 0)),
    ("loadgen CPU ms/req", md.number("loadgen_cpu_ms", 3)),
    BACKGROUND,
]
OPEN: list[md.Column] = [
    COMMON[0],
    ("rate req/s", md.number("rate", 0)),
    ("achieved req/s", md.number("rps", 0)),
    *COMMON[2:],
    *P50_P90_P99,
    ("+p50 vs direct", added),
    ("+p99 vs direct", lambda r: added(r, p99=True)),
    CPU,
    BACKGROUND,
]
STREAMED: list[md.Column] = [
    *COMMON,
    *((f"first chunk {p} ms", md.number(f"first_chunk_{p}_ms")) for p in ("p50", "p99")),
    *((f"total {p} ms", md.number(f"{p}_ms")) for p in ("p50", "p99")),
    ("+total p50 vs direct", added),
    CPU,
    BACKGROUND,
]


def _pair(name: str, value: str, digits: int, one: str, two: str) -> list[md.Column]:
    """The same figure for one worker and for two."""

    def figure(target: str) -> Callable[[dict[str, Row]], str]:
        return lambda g: md.f(g[target][value], digits)

    return [(f"{name}{one}", figure(GW_AIOHTTP)), (f"{name}{two}", figure(GW_2W))]


WORKERS: list[md.Column] = [
    KEY[0],
    *_pair("RPS", "rps", 0, " 1 worker", " 2 workers"),
    ("2 / 1", lambda g: md.x(ratio(g[GW_2W]["rps"], g[GW_AIOHTTP]["rps"]))),
    *_pair("p99 ms", "p99_ms", 2, " 1 worker", " 2 workers"),
    *_pair("CPU ms/req", "target_cpu_ms", 3, " 1", " 2"),
    *_pair("RSS MB", "target_rss_mb", 0, " 1", " 2"),
]


def targets(rows: Sequence[Row]) -> list[tuple[str, str, str]]:
    """The issue's targets, each measured here: (target, figure, met or missed)."""
    found = []
    for g in by_concurrency(rows):
        if GW_AIOHTTP in g and MINIMAL in g:
            mine, floor = g[GW_AIOHTTP]["target_cpu_ms"], g[MINIMAL]["target_cpu_ms"]
            goal = f"CPU/request <= 2x the minimal proxy's, c={g['c']['concurrency']}"
            figure = f"{mine:.3f} ms vs {floor:.3f} ms = {mine / floor:.2f}x"
            found.append((goal, figure, "met" if mine <= 2 * floor else "missed"))
    for r in open_loop(rows):
        p50, p99 = r["added_p50_ms"], r["added_p99_ms"]
        if r["target"] == GW_AIOHTTP and p50 is not None and p99 is not None:
            goal = f"added latency at {r['rate']:g} req/s: p50 <= 1 ms, p99 <= 3 ms"
            figure = f"p50 {p50:+.2f} ms, p99 {p99:+.2f} ms"
            found.append((goal, figure, "met" if p50 <= 1 and p99 <= 3 else "missed"))
    return found


TARGETS = md.listed("target (issue #8)", "measured", "")


def markdown(machine: dict[str, Any], config: dict[str, Any], rows: Sequence[Row]) -> str:
    groups = by_concurrency(rows)
    return md.render(
        Path(__file__).with_name("report.md"),
        nproc=machine["nproc"],
        machine=md.machine_lines(machine),
        background_mean=f"{config['background_mean']:.2f}",
        background_max=f"{config['background_max']:.2f}",
        wall_s=f"{config.get('wall_s', 0):.0f}",
        errors=sum(r["errors"] for r in rows),
        descriptions="\n".join(f"- **{name}**: {text}" for name, text in DESCRIPTIONS.items()),
        rounds=config["rounds"],
        warmup=config["warmup"],
        key=md.table(KEY, groups),
        targets=md.table(TARGETS, targets(rows)),
        closed=md.table(CLOSED, closed_loop(rows)),
        open_seconds=f"{config.get('open_seconds', 0):g}",
        open=md.table(OPEN, open_loop(rows)),
        workers=md.table(WORKERS, [g for g in groups if GW_AIOHTTP in g and GW_2W in g]),
        stream_chunks=config["stream_chunks"],
        stream_gap_ms=f"{config['stream_gap_ms']:g}",
        streamed=md.table(STREAMED, [r for r in rows if r["stream"]]),
    )


def print_summary(console: Console, rows: Sequence[Row]) -> None:
    md.show(console, "target CPU ms per request (non-stream)", KEY, by_concurrency(rows))
    md.show(console, "the issue's targets", TARGETS, targets(rows))


def _lines(ax: Axes, rows: Sequence[Row], value: str, title: str) -> None:
    """One line per target over concurrency; for CPU a shaded band of the rounds' range."""
    targets: dict[str, list[Row]] = defaultdict(list)
    for row in closed_loop(rows):
        targets[row["target"]].append(row)
    for target, series in targets.items():
        series = sorted(series, key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in series]
        (line,) = ax.plot(xs, [r[value] for r in series], "o-", label=target)
        if value == "target_cpu_ms":
            low = [min(r["target_cpu_ms_rounds"]) for r in series]
            high = [max(r["target_cpu_ms_rounds"]) for r in series]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
    concurrency_axis(ax, sorted({r["concurrency"] for r in closed_loop(rows)}), title)


def plot(rows: Sequence[Row], path: Path, subtitle: str) -> Path:
    fig, grid = figure(3, 2, size=(18, 9))
    _lines(grid[0][0], rows, "p50_ms", "p50 latency ms (non-stream, log scale)")
    grid[0][0].set_yscale("log")
    grid[0][0].legend(fontsize=8)
    _lines(grid[0][1], rows, "rps", "requests per second (non-stream)")
    _lines(
        grid[1][0], rows, "target_cpu_ms", "target CPU ms per request (non-stream; band: rounds)"
    )
    for ax in (grid[0][1], grid[1][0]):
        ax.set_ylim(bottom=0)
    streamed = [r for r in rows if r["stream"]]
    labels = [f"{r['target']}\nc={r['concurrency']}" for r in streamed]
    series = {"first chunk p50": [r["first_chunk_p50_ms"] or 0.0 for r in streamed]}
    series["total p50"] = [r["p50_ms"] for r in streamed]
    bars(grid[1][1], labels, series, "streamed: time to first chunk and total (p50)")
    fixed = open_loop(rows)
    series = {p: [r[f"{p}_ms"] for r in fixed] for p in ("p50", "p99")}
    labels = [f"{r['target']}\n{r['rate']:g}/s" for r in fixed]
    bars(grid[0][2], labels, series, "open loop: latency at fixed rates")
    grid[1][2].axis("off")
    return save(fig, path, f"Portico gateway overhead — {subtitle}")
