"""Writing the results: a Markdown report and a JSON file with every raw number."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stats import DIRECT, Row, closed_loop, open_loop

GW_AIOHTTP = "gateway-aiohttp"
GW_HTTPX = "gateway-httpx"
GW_2W = "gateway-2workers"
MINIMAL = "minimal-proxy"

DESCRIPTIONS = {
    DIRECT: "load generator -> fake upstream (no proxy; the baseline)",
    GW_AIOHTTP: "-> Portico (PORTICO_UPSTREAM_TRANSPORT=aiohttp, the default) -> fake upstream",
    GW_HTTPX: "-> Portico (PORTICO_UPSTREAM_TRANSPORT=httpx) -> fake upstream",
    GW_2W: "-> Portico as gateway-aiohttp, but `portico gateway serve --workers 2` "
    "(closed-loop non-streamed points only; CPU and RSS summed over master and workers)",
    MINIMAL: "-> bench/minimal_proxy.py (raw ASGI + aiohttp, forwards bytes) -> fake upstream",
}


def _f(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _range(values: Sequence[float]) -> str:
    return f"{min(values):.3f} to {max(values):.3f}" if values else "—"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "—"
    return f"{a / b:.2f}x"


def _key_table(rows: Sequence[Row]) -> list[str]:
    by = {(r.target, r.concurrency): r for r in closed_loop(rows)}

    def cell(target: str, conc: int) -> str:
        row = by.get((target, conc))
        if row is None:
            return "—"
        return f"**{row.target_cpu_ms:.3f}** ({_range(row.target_cpu_ms_rounds)})"

    def cpu(target: str, conc: int) -> float | None:
        row = by.get((target, conc))
        return row.target_cpu_ms if row else None

    lines = []
    for conc in sorted({r.concurrency for r in closed_loop(rows)}):
        aio, hx, floor = cpu(GW_AIOHTTP, conc), cpu(GW_HTTPX, conc), cpu(MINIMAL, conc)
        lines.append(
            [
                str(conc),
                cell(GW_AIOHTTP, conc),
                cell(GW_HTTPX, conc),
                cell(MINIMAL, conc),
                cell(DIRECT, conc),
                _ratio(hx, aio),
                _ratio(aio, floor),
                _f(None if aio is None or floor is None else aio - floor, 3),
                _f(None if aio is None or hx is None else hx - aio, 3),
            ]
        )
    header = [
        "c",
        "gateway-aiohttp",
        "gateway-httpx",
        "minimal-proxy",
        "direct (upstream alone)",
        "httpx / aiohttp",
        "aiohttp / minimal",
        "gateway-aiohttp minus minimal",
        "httpx minus aiohttp",
    ]
    return _table(header, lines)


def _nonstream_table(rows: Sequence[Row]) -> list[str]:
    header = [
        "target",
        "c",
        "requests",
        "errors",
        "RPS",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "+p50 vs direct",
        "target CPU ms/req",
        "range over rounds",
        "upstream CPU ms/req",
        "target RSS MB",
        "loadgen CPU ms/req",
        "background cores",
    ]
    lines = [
        [
            r.target,
            str(r.concurrency),
            str(r.requests),
            str(r.errors),
            _f(r.rps, 0),
            _f(r.p50_ms),
            _f(r.p90_ms),
            _f(r.p99_ms),
            "—" if r.target == DIRECT else _f(r.added_p50_ms, signed=True),
            _f(r.target_cpu_ms, 3),
            _range(r.target_cpu_ms_rounds),
            "(is the target)" if r.target == DIRECT else _f(r.upstream_cpu_ms, 3),
            _f(r.target_rss_mb, 0),
            _f(r.loadgen_cpu_ms, 3),
            _f(r.background_cores),
        ]
        for r in closed_loop(rows)
    ]
    return _table(header, lines)


def _open_table(rows: Sequence[Row]) -> list[str]:
    header = [
        "target",
        "rate req/s",
        "achieved req/s",
        "requests",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "+p50 vs direct",
        "+p99 vs direct",
        "target CPU ms/req",
        "background cores",
    ]
    lines = [
        [
            r.target,
            _f(r.rate, 0),
            _f(r.rps, 0),
            str(r.requests),
            str(r.errors),
            _f(r.p50_ms),
            _f(r.p90_ms),
            _f(r.p99_ms),
            "—" if r.target == DIRECT else _f(r.added_p50_ms, signed=True),
            "—" if r.target == DIRECT else _f(r.added_p99_ms, signed=True),
            _f(r.target_cpu_ms, 3),
            _f(r.background_cores),
        ]
        for r in open_loop(rows)
    ]
    return _table(header, lines)


def _workers_table(rows: Sequence[Row]) -> list[str]:
    by = {(r.target, r.concurrency): r for r in closed_loop(rows)}
    lines = []
    for conc in sorted({r.concurrency for r in closed_loop(rows)}):
        one, two = by.get((GW_AIOHTTP, conc)), by.get((GW_2W, conc))
        if one is None or two is None:
            continue
        lines.append(
            [
                str(conc),
                _f(one.rps, 0),
                _f(two.rps, 0),
                _ratio(two.rps, one.rps),
                _f(one.p99_ms),
                _f(two.p99_ms),
                _f(one.target_cpu_ms, 3),
                _f(two.target_cpu_ms, 3),
                _f(one.target_rss_mb, 0),
                _f(two.target_rss_mb, 0),
            ]
        )
    header = [
        "c",
        "RPS 1 worker",
        "RPS 2 workers",
        "2 / 1",
        "p99 ms 1 worker",
        "p99 ms 2 workers",
        "CPU ms/req 1",
        "CPU ms/req 2",
        "RSS MB 1",
        "RSS MB 2",
    ]
    return _table(header, lines)


def _targets(rows: Sequence[Row]) -> list[str]:
    """The issue's targets, each measured here: met or not, with the figure."""
    closed = {(r.target, r.concurrency): r for r in closed_loop(rows)}
    lines = []
    for (target, conc), row in sorted(closed.items(), key=lambda kv: kv[0][1]):
        floor = closed.get((MINIMAL, conc))
        if target != GW_AIOHTTP or floor is None:
            continue
        ratio = row.target_cpu_ms / floor.target_cpu_ms
        lines.append(
            [
                f"CPU/request <= 2x the minimal proxy's, c={conc}",
                f"{row.target_cpu_ms:.3f} ms vs {floor.target_cpu_ms:.3f} ms = {ratio:.2f}x",
                "met" if ratio <= 2 else "missed",
            ]
        )
    for row in open_loop(rows):
        if row.target != GW_AIOHTTP or row.added_p50_ms is None or row.added_p99_ms is None:
            continue
        ok = row.added_p50_ms <= 1 and row.added_p99_ms <= 3
        lines.append(
            [
                f"added latency at {row.rate:g} req/s: p50 <= 1 ms, p99 <= 3 ms",
                f"p50 {row.added_p50_ms:+.2f} ms, p99 {row.added_p99_ms:+.2f} ms",
                "met" if ok else "missed",
            ]
        )
    return _table(["target (issue #8)", "measured", ""], lines)


def _stream_table(rows: Sequence[Row]) -> list[str]:
    header = [
        "target",
        "c",
        "requests",
        "errors",
        "first chunk p50 ms",
        "first chunk p99 ms",
        "total p50 ms",
        "total p99 ms",
        "+total p50 vs direct",
        "target CPU ms/req",
        "background cores",
    ]
    lines = [
        [
            r.target,
            str(r.concurrency),
            str(r.requests),
            str(r.errors),
            _f(r.first_chunk_p50_ms),
            _f(r.first_chunk_p99_ms),
            _f(r.p50_ms),
            _f(r.p99_ms),
            "—" if r.target == DIRECT else _f(r.added_p50_ms, signed=True),
            _f(r.target_cpu_ms, 3),
            _f(r.background_cores),
        ]
        for r in rows
        if r.stream
    ]
    return _table(header, lines)


def markdown(machine: dict[str, Any], config: dict[str, Any], rows: Sequence[Row]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    errors = sum(r.errors for r in rows)
    out = [
        "# Portico gateway overhead",
        "",
        f"> **One run on a shared, noisy {machine['nproc']}-core machine.** Absolute latencies "
        "and RPS move by",
        "> tens of percent between runs; compare ratios *within this run*. The load",
        "> generator, the target and the fake upstream all share the same cores, so RPS and",
        "> latency include CPU contention; CPU ms per request is the steadier figure.",
        "",
        f"- Date: {machine['date_utc']}; commit `{machine['git_commit']}`",
        f"- Machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['platform']}",
        f"- Python {machine['python']}; {packages}",
        f"- Load average at start / end: {machine['load_average_at_start']} / "
        f"{machine.get('load_average_at_end', '?')}",
        f"- Background load: other processes on the machine used {config['background_mean']:.2f} "
        f"cores on average during measured phases (up to {config['background_max']:.2f} in one "
        f"point) of {machine['nproc']}",
        f"- Wall time of the run: {config.get('wall_s', 0):.0f} s; failed requests: {errors}",
        "",
        "## What was measured",
        "",
        "Targets, each its own process on its own port, all in front of one fake upstream "
        "(`bench/fake_upstream.py`, answers instantly):",
        "",
        *[f"- **{name}**: {text}" for name, text in DESCRIPTIONS.items()],
        "",
        f"Closed loop, `POST /v1/chat/completions` with `Authorization: Bearer bench-key`. "
        f"{config['rounds']} interleaved rounds: each round runs every concurrency, and at each "
        f"concurrency every target in a rotated order, so slow drift of the machine hits all "
        f"targets alike. Per point: {config['warmup']} warm-up requests (not measured), then "
        f"the measured ones; the counts below are totals over rounds. Each request body is "
        f"distinct, with `temperature: 0`. The gateways run with every feature on: API-key "
        f"auth, rate limits (rpm and tpm, high enough never to refuse) and the response cache "
        f"in Redis on 127.0.0.1:6379 (each request is a cache miss: looked up, forwarded, "
        f"stored), metrics, and one JSON access-log line per request at INFO, written to a "
        f"file; under `uvicorn --factory --no-access-log --log-level warning`.",
        "",
        "## Key number: target CPU per request (ms, = CPU seconds per 1000 requests)",
        "",
        "Non-streamed requests; CPU time (user + system, all threads) of the target process",
        "only, during the measured phases; in brackets the min to max over rounds.",
        "*gateway-aiohttp minus minimal* is what Portico's own work (its Redis calls for limits",
        "and the cache, auth, validation, model check, routing, metrics, access log) costs beyond",
        "forwarding bytes with aiohttp; *httpx minus aiohttp* is what the other transport adds.",
        "",
        *_key_table(rows),
        "",
        "## Targets",
        "",
        *_targets(rows),
        "",
        "## Non-streamed requests, closed loop",
        "",
        *_nonstream_table(rows),
        "",
        "## Non-streamed requests, open loop (fixed rates)",
        "",
        f"Requests start on a fixed schedule ({config.get('open_seconds', 0):g} s per point "
        "and round), whatever the answers do; each latency counts from the scheduled start, "
        "so falling behind shows as latency (no coordinated omission).",
        "",
        *_open_table(rows),
        "",
        "## One vs two uvicorn workers (closed loop, non-streamed)",
        "",
        f"The same gateway as gateway-aiohttp, run as `portico gateway serve --workers 2` on "
        f"this {machine['nproc']}-core machine, where the load generator and the upstream "
        "share the same cores.",
        "",
        *_workers_table(rows),
        "",
        f"## Streamed requests (`stream: true`, {config['stream_chunks']} SSE chunks "
        f"{config['stream_gap_ms']:g} ms apart + `[DONE]`)",
        "",
        *_stream_table(rows),
        "",
        "## Columns",
        "",
        "- **c**: concurrency (closed loop: that many requests always in flight).",
        "- **RPS**: measured requests / measured wall time, summed over rounds.",
        "- **p50/p90/p99**: client-side latency over every measured request, request sent to "
        "body fully read.",
        "- **+p50 vs direct**: p50 minus the direct target's p50 at the same concurrency.",
        "- **target CPU ms/req**: target process CPU time / requests; *range over rounds* is "
        "the per-round min to max, a feel for the noise (resolution: 10 ms CPU ticks per round).",
        "- **upstream CPU ms/req**: the fake upstream's CPU per request while that target ran.",
        "- **target RSS MB**: resident memory of the target process after its last point.",
        "- **loadgen CPU ms/req**: the load generator's own CPU per request.",
        "- **background cores**: machine-wide busy CPU (from /proc/stat) minus the bench's "
        "own processes, divided by wall time: load from anything else on the machine.",
        "- **first chunk**: time from sending the request to the first body bytes.",
        "",
        "Raw numbers (every latency): `gateway_overhead.json`; plots: `gateway_overhead.png`.",
        "",
    ]
    return "\n".join(out)


def write(
    out_dir: Path,
    machine: dict[str, Any],
    config: dict[str, Any],
    rows: Sequence[Row],
    points: Sequence[dict[str, Any]],
) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / "gateway_overhead.md"
    json_path = out_dir / "gateway_overhead.json"
    md_path.write_text(markdown(machine, config, rows))
    payload = {
        "machine": machine,
        "config": config,
        "rows": [r.to_json() for r in rows],
        "points": list(points),
    }
    json_path.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    return md_path, json_path
