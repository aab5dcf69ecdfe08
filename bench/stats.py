"""Folding the load generator's per-round points into one row per target x mode x load
(a closed-loop concurrency, or an open-loop rate)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

DIRECT = "direct"


def percentiles_ms(samples_us: Sequence[int]) -> tuple[float, float, float]:
    """p50, p90, p99 in milliseconds (inclusive method; NaN if there are no samples)."""
    if len(samples_us) < 2:
        value = samples_us[0] / 1000 if samples_us else float("nan")
        return value, value, value
    cuts = statistics.quantiles(samples_us, n=100, method="inclusive")
    return cuts[49] / 1000, cuts[89] / 1000, cuts[98] / 1000


@dataclass
class Row:
    """One line of the results table. CPU figures are ms per request (= s per 1000)."""

    target: str
    stream: bool
    concurrency: int
    rate: float  # open-loop requests/s; 0 for a closed loop
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    first_chunk_p50_ms: float | None
    first_chunk_p99_ms: float | None
    added_p50_ms: float | None
    added_p99_ms: float | None
    target_cpu_ms: float
    target_cpu_ms_rounds: list[float]
    upstream_cpu_ms: float
    loadgen_cpu_ms: float
    target_rss_mb: float
    background_cores: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _background_cpu_s(point: dict[str, Any]) -> float:
    """CPU the rest of the machine used during a point: busy minus the bench's processes."""
    ours = float(point["target_cpu_s"] + point["loadgen_cpu_s"])
    if point["target"] != DIRECT:  # for direct, the upstream is the target: count it once
        ours += point["upstream_cpu_s"]
    return max(0.0, float(point["machine_busy_cpu_s"]) - ours)


def _row(
    target: str, stream: bool, concurrency: int, rate: float, points: list[dict[str, Any]]
) -> Row:
    requests = sum(p["requests"] for p in points)
    wall_s = sum(p["wall_s"] for p in points)
    latencies = [lat for p in points for lat in p["latencies_us"]]
    first_chunks = [lat for p in points for lat in p["first_chunk_us"]]
    p50, p90, p99 = percentiles_ms(latencies)
    fc50, _, fc99 = percentiles_ms(first_chunks) if first_chunks else (None, None, None)
    return Row(
        target=target,
        stream=stream,
        concurrency=concurrency,
        rate=rate,
        requests=requests,
        errors=sum(p["errors"] for p in points),
        rps=requests / wall_s,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        first_chunk_p50_ms=fc50,
        first_chunk_p99_ms=fc99,
        added_p50_ms=None,
        added_p99_ms=None,
        target_cpu_ms=1000 * sum(p["target_cpu_s"] for p in points) / requests,
        target_cpu_ms_rounds=[1000 * p["target_cpu_s"] / p["requests"] for p in points],
        upstream_cpu_ms=1000 * sum(p["upstream_cpu_s"] for p in points) / requests,
        loadgen_cpu_ms=1000 * sum(p["loadgen_cpu_s"] for p in points) / requests,
        target_rss_mb=max(p["target_rss_mb"] for p in points),
        background_cores=sum(_background_cpu_s(p) for p in points) / wall_s,
    )


def summarize(points: Iterable[dict[str, Any]], target_order: Sequence[str]) -> list[Row]:
    """Rows ordered by mode, rate, concurrency, then ``target_order``; adds p50 and p99
    deltas vs direct under the same load."""
    groups: dict[tuple[bool, float, int, str], list[dict[str, Any]]] = defaultdict(list)
    for point in points:
        key = (point["stream"], point.get("rate", 0.0), point["concurrency"], point["target"])
        groups[key].append(point)
    rank = {name: i for i, name in enumerate(target_order)}
    keys = sorted(groups, key=lambda k: (k[0], k[1], k[2], rank.get(k[3], len(rank))))
    rows = [_row(target, stream, conc, rate, groups[(stream, rate, conc, target)])
            for stream, rate, conc, target in keys]  # fmt: skip
    direct = {(r.stream, r.rate, r.concurrency): r for r in rows if r.target == DIRECT}
    for row in rows:
        base = direct.get((row.stream, row.rate, row.concurrency))
        if base is not None:
            row.added_p50_ms = row.p50_ms - base.p50_ms
            row.added_p99_ms = row.p99_ms - base.p99_ms
    return rows


def background_cores(points: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """(mean, max over points) of the cores other processes used during measured phases."""
    per_point = [_background_cpu_s(p) / p["wall_s"] for p in points]
    total_wall = sum(p["wall_s"] for p in points)
    mean = sum(_background_cpu_s(p) for p in points) / total_wall if total_wall else 0.0
    return mean, max(per_point, default=0.0)


def closed_loop(rows: Iterable[Row]) -> list[Row]:
    """Non-streamed closed-loop rows (the concurrency sweep)."""
    return [r for r in rows if not r.stream and not r.rate]


def open_loop(rows: Iterable[Row]) -> list[Row]:
    """Non-streamed open-loop rows (fixed request rates)."""
    return [r for r in rows if not r.stream and r.rate]
