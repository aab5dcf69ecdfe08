"""Summaries, Markdown and JSON of the two real-engine scenarios (cache and engine)."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from stats import percentiles_ms

DIRECT = "direct"
GATEWAY = "gateway"
LOOKUP_METRIC = "portico_cache_lookup_seconds"
IGNORE_EOS_NOTE = (
    ", `ignore_eos: true` (every answer is exactly max_tokens long, as in vLLM's own benchmarks)"
)

# Cache scenario: the kinds of request, in report order, with what each one is.
CACHE_KINDS = {
    "miss": "non-stream, first time: x-cache miss, the engine answers",
    "hit": "non-stream, same request again: x-cache hit, answered from Redis",
    "stream-miss": "streamed, first time (other prompts): miss, relayed from the engine",
    "stream-hit": "streamed, same request again: hit, the recorded events replayed",
}


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.{digits}f}"


def _x(a: float | None, b: float | None, digits: int = 2) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b <= 0:
        return "—"
    return f"{a / b:.{digits}f}x"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out


def _machine_lines(machine: dict[str, Any], config: dict[str, Any]) -> list[str]:
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    engine = config["engine"]
    return [
        f"- Date: {machine['date_utc']}; commit `{machine['git_commit']}`",
        f"- Machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['platform']}",
        f"- Python {machine['python']}; {packages}",
        f"- Engine: `{' '.join(engine['argv'])}`, model `{engine['model']}`, ready in "
        f"{engine['startup_s']:.0f} s; Redis {config.get('redis_version', '?')}",
        f"- Load average at start / end: {machine['load_average_at_start']} / "
        f"{machine.get('load_average_at_end', '?')}",
    ]


def _noise_note(machine: dict[str, Any]) -> list[str]:
    return [
        f"> **One run on a shared, noisy {machine['nproc']}-core machine.** The engine, the "
        "gateway, Redis and",
        "> the client share the same cores, and whatever else ran on the box (*background",
        "> cores*). Absolute numbers move a lot between runs; compare ratios *within this run*.",
    ]


# --- cache --------------------------------------------------------------------------


@dataclass
class CacheRow:
    kind: str
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    first_byte_p50_ms: float | None
    first_byte_p99_ms: float | None
    first_token_p50_ms: float | None
    first_token_p99_ms: float | None
    completion_tokens_mean: float | None
    content_chunks_mean: float | None  # streamed: chunks with non-empty delta.content


def _cache_row(kind: str, replies: Sequence[dict[str, Any]]) -> CacheRow:
    ok = [r for r in replies if r["error"] is None]
    totals = [r["total_us"] for r in ok]
    p50, p90, p99 = percentiles_ms(totals)
    stream = kind.startswith("stream")
    fb = percentiles_ms([r["first_byte_us"] for r in ok if r["first_byte_us"] is not None])
    ft = percentiles_ms([r["first_token_us"] for r in ok if r["first_token_us"] is not None])
    tokens = [r["completion_tokens"] for r in ok if r["completion_tokens"] is not None]
    return CacheRow(
        kind=kind,
        requests=len(replies),
        errors=len(replies) - len(ok),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=statistics.fmean(totals) / 1000 if totals else float("nan"),
        max_ms=max(totals) / 1000 if totals else float("nan"),
        first_byte_p50_ms=fb[0] if stream else None,
        first_byte_p99_ms=fb[2] if stream else None,
        first_token_p50_ms=ft[0] if stream else None,
        first_token_p99_ms=ft[2] if stream else None,
        completion_tokens_mean=statistics.fmean(tokens) if tokens else None,
        content_chunks_mean=statistics.fmean(r["pieces"] for r in ok) if stream and ok else None,
    )


def _histogram(text: str, name: str) -> tuple[dict[float, float], float, float]:
    """(cumulative bucket counts by upper bound, count, sum) of one histogram."""
    buckets: dict[float, float] = defaultdict(float)
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_bucket":
                buckets[float(sample.labels["le"])] += sample.value
            elif sample.name == name + "_count":
                count += sample.value
            elif sample.name == name + "_sum":
                total += sample.value
    return dict(buckets), count, total


def _bucket_quantile(q: float, buckets: dict[float, float]) -> float | None:
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
            fraction = (rank - lower_count) / span if span > 0 else 1.0
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, buckets[bound]
    return None


def lookup_histogram(before: str, after: str) -> dict[str, Any]:
    """The gateway's portico_cache_lookup_seconds during the measured phase (after - before)."""
    b0, c0, s0 = _histogram(before, LOOKUP_METRIC)
    b1, c1, s1 = _histogram(after, LOOKUP_METRIC)
    buckets = {le: b1[le] - b0.get(le, 0.0) for le in b1}
    count, total = c1 - c0, s1 - s0
    p50, p99 = _bucket_quantile(0.5, buckets), _bucket_quantile(0.99, buckets)
    return {
        "count": count,
        "sum_s": total,
        "mean_ms": 1000 * total / count if count else None,
        "p50_ms_estimate": None if p50 is None else 1000 * p50,
        "p99_ms_estimate": None if p99 is None else 1000 * p99,
        "buckets": {("+Inf" if math.isinf(le) else f"{le:g}"): n for le, n in buckets.items()},
    }


def summarize_cache(point: dict[str, Any]) -> dict[str, Any]:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for reply in point["replies"]:
        by_kind[reply["kind"]].append(reply)
    rows = {kind: _cache_row(kind, by_kind[kind]) for kind in CACHE_KINDS if by_kind[kind]}
    return {
        "rows": {kind: asdict(row) for kind, row in rows.items()},
        "lookup": lookup_histogram(point["metrics_before"], point["metrics_after"]),
        "errors": point["errors"],
        "error_samples": point["error_samples"],
        "wall_s": point["wall_s"],
        "background_cores": _background_s(point) / point["wall_s"],
        "gateway_cpu_s": point["gateway_cpu_s"],
        "engine_cpu_s": point["engine_cpu_s"],
    }


def cache_markdown(machine: dict[str, Any], config: dict[str, Any], summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    lookup = summary["lookup"]
    miss, hit = rows.get("miss"), rows.get("hit")
    smiss, shit = rows.get("stream-miss"), rows.get("stream-hit")

    def get(row: dict[str, Any] | None, name: str) -> float | None:
        return None if row is None else row[name]

    key = [
        ["non-stream: total time", _f(get(miss, "p50_ms")), _f(get(hit, "p50_ms")),
         _x(get(miss, "p50_ms"), get(hit, "p50_ms"), 0), _f(get(miss, "p99_ms")),
         _f(get(hit, "p99_ms")), _x(get(miss, "p99_ms"), get(hit, "p99_ms"), 0)],
        ["streamed: first token", _f(get(smiss, "first_token_p50_ms")),
         _f(get(shit, "first_token_p50_ms")),
         _x(get(smiss, "first_token_p50_ms"), get(shit, "first_token_p50_ms"), 0),
         _f(get(smiss, "first_token_p99_ms")), _f(get(shit, "first_token_p99_ms")),
         _x(get(smiss, "first_token_p99_ms"), get(shit, "first_token_p99_ms"), 0)],
        ["streamed: total time", _f(get(smiss, "p50_ms")), _f(get(shit, "p50_ms")),
         _x(get(smiss, "p50_ms"), get(shit, "p50_ms"), 0), _f(get(smiss, "p99_ms")),
         _f(get(shit, "p99_ms")), _x(get(smiss, "p99_ms"), get(shit, "p99_ms"), 0)],
    ]  # fmt: skip
    detail = [
        [
            f"`{kind}`",
            str(row["requests"]),
            str(row["errors"]),
            _f(row["p50_ms"]),
            _f(row["p90_ms"]),
            _f(row["p99_ms"]),
            _f(row["max_ms"]),
            _f(row["mean_ms"]),
            _f(row["first_byte_p50_ms"]),
            _f(row["first_token_p50_ms"]),
            _f(row["first_token_p99_ms"]),
            _f(row["completion_tokens_mean"], 1),
            _f(row["content_chunks_mean"], 1),
        ]
        for kind, row in rows.items()
    ]
    lookup_line = (
        f"Over the measured phase the gateway observed **{lookup['count']:.0f}** found lookups "
        f"(one per hit), mean **{_f(lookup['mean_ms'], 3)} ms**; from its buckets (0.5, 1, "
        f"2.5, 5 ms, ...; linear interpolation as Prometheus' `histogram_quantile`) p50 ≈ "
        f"{_f(lookup['p50_ms_estimate'], 3)} ms, p99 ≈ {_f(lookup['p99_ms_estimate'], 3)} ms. "
        f"Buckets (cumulative): "
        + ", ".join(f"le {le}: {n:.0f}" for le, n in lookup["buckets"].items())
        + "."
    )
    n, n_stream = config["cache_prompts"], config["cache_stream_prompts"]
    repeats = config["cache_hit_repeats"]
    again = "again" if repeats == 1 else f"again {repeats} times"
    out = [
        "# Portico response cache on the real engine: hit vs miss",
        "",
        *_noise_note(machine),
        "",
        *_machine_lines(machine, config),
        f"- Wall time of the measured phase: {summary['wall_s']:.0f} s; failed checks: "
        f"{summary['errors']}; background cores (CPU of everything but the engine, the "
        f"gateway and the client, per wall second): {summary['background_cores']:.2f}",
        "",
        "## What was measured",
        "",
        "One Portico gateway (`uvicorn --factory gateway.app:create_app`, default settings, "
        f"cache in the real Redis under a fresh prefix `{config['redis_prefix']}`) in front of "
        "the vLLM CPU engine. Sequential requests (one at a time, one keep-alive connection), "
        f"`POST /v1/chat/completions`, `temperature: 0`, `max_tokens: {config['cache_max_tokens']}`"
        ", each prompt distinct:",
        "",
        f"- {n} prompts, each sent non-streamed (**miss**: the engine answers), then {again} "
        "(**hit**);",
        f"- {n_stream} other prompts sent streamed (**stream miss**, relayed from the engine), "
        f"then {again} (**stream hit**). A streamed and a non-streamed request are "
        "different entries (each is the answer as the engine sent it).",
        "",
        "Every answer is checked: `x-cache` must be `miss`/`hit` as expected and a hit's text "
        "must equal the miss's. Times are client-side on loopback (request sent to last byte), "
        "which is close to the server-side time. After the warm-up (a few requests with "
        "`X-Portico-Cache: off`, one stored and hit prompt) nothing is excluded.",
        "",
        "## Key numbers: miss vs hit (ms)",
        "",
        *_table(
            ["", "miss p50", "hit p50", "miss / hit p50", "miss p99", "hit p99", "miss / hit p99"],
            key,
        ),
        "",
        f"Misses: {n} (streamed: {n_stream}) samples, hits {repeats} times as many; with so few "
        "samples p99 is close to the maximum.",
        "",
        "## The gateway's own lookup time (`portico_cache_lookup_seconds`)",
        "",
        lookup_line,
        "",
        "## All kinds",
        "",
        *_table(
            [
                "kind",
                "requests",
                "errors",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "mean ms",
                "first byte p50 ms",
                "first token p50 ms",
                "first token p99 ms",
                "completion tokens (mean)",
                "content chunks (mean)",
            ],
            detail,
        ),
        "",
        *[f"- `{kind}`: {text}" for kind, text in CACHE_KINDS.items() if kind in rows],
        "- **first byte**: first body bytes (for the engine's chat streams that is the role "
        "chunk, which vLLM sends with the first token); **first token**: the first chunk with "
        "non-empty `delta.content`; **content chunks**: how many such chunks a stream had.",
        "",
    ]
    if summary["error_samples"]:
        out += ["## Failed checks", "", *[f"- `{s}`" for s in summary["error_samples"]], ""]
    out += ["Raw numbers (every request): `cache.json`; plot: `cache.png`.", ""]
    return "\n".join(out)


# --- engine -------------------------------------------------------------------------


@dataclass
class EngineRow:
    target: str
    concurrency: int
    requests: int
    errors: int
    completion_tokens: int
    wall_s: float
    tokens_per_s: float
    tokens_per_s_rounds: list[float]
    ttft_p50_ms: float
    ttft_p90_ms: float
    ttft_p99_ms: float
    ttft_p50_ms_rounds: list[float]
    latency_p50_ms: float
    latency_p90_ms: float
    tpot_p50_ms: float  # time per output token after the first, per request
    engine_cpu_ms_per_token: float
    gateway_cpu_cores: float
    gateway_cpu_ms_per_request: float | None  # above its idle rate; gateway target only
    loadgen_cpu_ms_per_request: float
    background_cores: float
    rounds: list[int]


def _background_s(point: dict[str, Any]) -> float:
    """Busy CPU of the rest of the machine during a point: busy minus the bench's processes."""
    ours = point["engine_cpu_s"] + point["gateway_cpu_s"] + point["loadgen_cpu_s"]
    return max(0.0, point["machine_busy_cpu_s"] - ours)


def _engine_row(
    target: str, concurrency: int, points: list[dict[str, Any]], gateway_idle_cores: float
) -> EngineRow:
    replies = [r for p in points for r in p["replies"] if r["error"] is None]
    tokens = sum(r["completion_tokens"] or 0 for r in replies)
    wall_s = sum(p["wall_s"] for p in points)
    ttft = percentiles_ms([r["first_token_us"] for r in replies if r["first_token_us"]])
    latency = percentiles_ms([r["total_us"] for r in replies])
    tpot = [
        (r["total_us"] - r["first_token_us"]) / (r["completion_tokens"] - 1)
        for r in replies
        if r["first_token_us"] and (r["completion_tokens"] or 0) > 1
    ]
    requests = sum(p["requests"] for p in points)
    return EngineRow(
        target=target,
        concurrency=concurrency,
        requests=requests,
        errors=sum(p["errors"] for p in points),
        completion_tokens=tokens,
        wall_s=wall_s,
        tokens_per_s=tokens / wall_s if wall_s else float("nan"),
        tokens_per_s_rounds=[
            sum(r["completion_tokens"] or 0 for r in p["replies"] if r["error"] is None)
            / p["wall_s"]
            for p in points
        ],
        ttft_p50_ms=ttft[0],
        ttft_p90_ms=ttft[1],
        ttft_p99_ms=ttft[2],
        ttft_p50_ms_rounds=[
            percentiles_ms([r["first_token_us"] for r in p["replies"] if r["error"] is None])[0]
            for p in points
        ],
        latency_p50_ms=latency[0],
        latency_p90_ms=latency[1],
        tpot_p50_ms=statistics.median(tpot) / 1000 if tpot else float("nan"),
        engine_cpu_ms_per_token=1000 * sum(p["engine_cpu_s"] for p in points) / tokens
        if tokens
        else float("nan"),
        gateway_cpu_cores=sum(p["gateway_cpu_s"] for p in points) / wall_s if wall_s else 0.0,
        gateway_cpu_ms_per_request=1000
        * (sum(p["gateway_cpu_s"] for p in points) - gateway_idle_cores * wall_s)
        / requests
        if target == GATEWAY
        else None,
        loadgen_cpu_ms_per_request=1000 * sum(p["loadgen_cpu_s"] for p in points) / requests,
        background_cores=sum(_background_s(p) for p in points) / wall_s if wall_s else 0.0,
        rounds=[p["round"] for p in points],
    )


def summarize_engine(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for point in points:
        groups[(point["concurrency"], point["target"])].append(point)
    order = {DIRECT: 0, GATEWAY: 1}
    # While the direct target runs, the gateway only idles: that is its idle CPU rate.
    idle = [p for p in points if p["target"] == DIRECT]
    idle_wall = sum(p["wall_s"] for p in idle)
    idle_cores = sum(p["gateway_cpu_s"] for p in idle) / idle_wall if idle_wall else 0.0
    rows = [
        _engine_row(
            target, conc, sorted(groups[(conc, target)], key=lambda p: p["round"]), idle_cores
        )
        for conc, target in sorted(groups, key=lambda k: (k[0], order.get(k[1], 2)))
    ]
    ratios = []
    for conc in sorted({r.concurrency for r in rows}):
        d = next((r for r in rows if r.concurrency == conc and r.target == DIRECT), None)
        g = next((r for r in rows if r.concurrency == conc and r.target == GATEWAY), None)
        if d is None or g is None:
            continue
        ratios.append(
            {
                "concurrency": conc,
                "tokens_per_s": g.tokens_per_s / d.tokens_per_s,
                "tokens_per_s_rounds": [
                    gr / dr
                    for gr, dr in zip(g.tokens_per_s_rounds, d.tokens_per_s_rounds, strict=True)
                ],
                "ttft_p50": g.ttft_p50_ms / d.ttft_p50_ms,
                "ttft_p50_rounds": [
                    gr / dr
                    for gr, dr in zip(g.ttft_p50_ms_rounds, d.ttft_p50_ms_rounds, strict=True)
                ],
                "ttft_p90": g.ttft_p90_ms / d.ttft_p90_ms,
                "latency_p50": g.latency_p50_ms / d.latency_p50_ms,
                "ttft_p50_added_ms": g.ttft_p50_ms - d.ttft_p50_ms,
            }
        )
    errors = [s for p in points for s in p["error_samples"]]
    return {
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
        "gateway_idle_cores": idle_cores,
        "errors": sum(p["errors"] for p in points),
        "error_samples": errors[:10],
    }


def engine_markdown(
    machine: dict[str, Any], config: dict[str, Any], summary: dict[str, Any]
) -> str:
    rows, ratios = summary["rows"], summary["ratios"]
    key = [
        [
            str(r["concurrency"]),
            f"**{r['tokens_per_s']:.3f}**",
            " / ".join(f"{x:.2f}" for x in r["tokens_per_s_rounds"]),
            f"**{r['ttft_p50']:.3f}**",
            " / ".join(f"{x:.2f}" for x in r["ttft_p50_rounds"]),
            f"{r['ttft_p90']:.3f}",
            f"{r['ttft_p50_added_ms']:+.1f}",
            f"{r['latency_p50']:.3f}",
        ]
        for r in ratios
    ]
    detail = [
        [
            r["target"],
            str(r["concurrency"]),
            str(r["requests"]),
            str(r["errors"]),
            str(r["completion_tokens"]),
            _f(r["tokens_per_s"], 1),
            " / ".join(f"{x:.1f}" for x in r["tokens_per_s_rounds"]),
            _f(r["ttft_p50_ms"], 0),
            _f(r["ttft_p90_ms"], 0),
            " / ".join(f"{x:.0f}" for x in r["ttft_p50_ms_rounds"]),
            _f(r["latency_p50_ms"], 0),
            _f(r["tpot_p50_ms"], 1),
            _f(r["engine_cpu_ms_per_token"], 1),
            _f(r["gateway_cpu_cores"], 3),
            _f(r["gateway_cpu_ms_per_request"], 1),
            _f(r["background_cores"]),
        ]
        for r in rows
    ]
    pairs = zip(config["engine_concurrency"], config["engine_requests"], strict=True)
    plan = ", ".join(f"c={c}: {n}" for c, n in pairs)
    out = [
        "# The real engine through Portico: direct vs gateway",
        "",
        *_noise_note(machine),
        "",
        *_machine_lines(machine, config),
        f"- Wall time of the measured phases: {config['engine_wall_s']:.0f} s; failed requests: "
        f"{summary['errors']}",
        "",
        "## What was measured",
        "",
        "The batch-size sweep: closed-loop streamed chat completions at several concurrencies "
        "(`c` requests always in flight, so vLLM batches up to `c` sequences), each one",
        "",
        f"- **direct**: client -> vLLM (`{config['engine']['url']}`), and",
        "- **gateway**: client -> Portico (default settings, Redis, `X-Portico-Cache: off` so "
        "the cache never answers) -> the same vLLM,",
        "",
        f"side by side in {config['engine_rounds']} interleaved rounds: each round runs every "
        "concurrency, and at each concurrency both targets, the order alternating (direct "
        "first, then gateway first, ...), so drift of the machine hits both alike. Requests "
        f"per round and target: {plan}. Every request has its own prompt (`Request <n>. Write "
        "a long, detailed story about ...`; unique, so vLLM's prefix cache helps neither "
        f"target more), `temperature: 0`, `max_tokens: {config['engine_max_tokens']}`"
        + (IGNORE_EOS_NOTE if config["engine_ignore_eos"] else "")
        + ", `stream: true` with `stream_options.include_usage`. Unmeasured warm-up first.",
        "",
        "## Key numbers: gateway / direct (1.00 = no difference)",
        "",
        *_table(
            [
                "c",
                "tokens/s ratio",
                "per round",
                "TTFT p50 ratio",
                "per round",
                "TTFT p90 ratio",
                "TTFT p50 gateway minus direct (ms)",
                "latency p50 ratio",
            ],
            key,
        ),
        "",
        "## Per target",
        "",
        *_table(
            [
                "target",
                "c",
                "requests",
                "errors",
                "completion tokens",
                "tokens/s",
                "per round",
                "TTFT p50 ms",
                "TTFT p90 ms",
                "TTFT p50 per round",
                "latency p50 ms",
                "TPOT p50 ms",
                "engine CPU ms/token",
                "gateway CPU cores",
                "gateway CPU ms/req above idle",
                "background cores",
            ],
            detail,
        ),
        "",
        "## Columns",
        "",
        "- **tokens/s**: completion tokens (from each stream's usage chunk) / measured wall "
        "time, summed over rounds; *per round*: each round's value (a feel for the noise).",
        "- **TTFT**: time from sending the request to the first chunk with non-empty "
        "`delta.content`, client-side; *per round*: each round's p50. At c=1 there are only "
        "a few requests per target, so p90 is close to the maximum. When a point is one wave "
        "(as many requests as the concurrency), all but the first request get their first "
        "token from the same prefill step, so TTFT p50 is that wave's prefill time, which "
        "varies from round to round: read the per-round ratios.",
        "- **latency**: request sent to `[DONE]` read. **TPOT**: per request, (latency - TTFT) "
        "/ (completion tokens - 1), the median over requests.",
        "- **engine CPU ms/token**: CPU time of the engine's whole process tree (launcher, "
        "API server, engine core, worker) per completion token.",
        "- **gateway CPU cores**: the gateway process's CPU seconds per wall second (for "
        "*direct* the gateway is idle and this is its background work: with Redis configured, "
        "an event-loop lag monitor wakes every 10 ms); **gateway CPU ms/req above idle**: "
        "(its CPU seconds minus its idle rate over the direct points times the wall time) per "
        "request, i.e. what relaying one streamed request cost it (gateway target only).",
        "- **background cores**: machine-wide busy CPU (/proc/stat) minus the engine tree, the "
        "gateway and the client, per wall second: anything else the machine ran meanwhile.",
        "",
    ]
    if summary["error_samples"]:
        out += ["## Failed requests", "", *[f"- `{s}`" for s in summary["error_samples"]], ""]
    out += ["Raw numbers (every request): `engine.json`; plot: `engine.png`.", ""]
    return "\n".join(out)


def write(out_dir: Path, name: str, markdown: str, payload: dict[str, Any]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out_dir / f"{name}.md", out_dir / f"{name}.json"
    md_path.write_text(markdown)
    json_path.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    return md_path, json_path
