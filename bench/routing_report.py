"""Summary, Markdown and console table of the ``routing`` scenario."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from real_report import _f, _table
from rich.console import Console
from rich.table import Table
from stats import percentiles_ms

ROUND_ROBIN = "round_robin"
AFFINITY = "affinity"
STRATEGIES = (ROUND_ROBIN, AFFINITY)
ENGINE_NAMES = ("A", "B")
# Per-round values that get a median per strategy and an affinity / round_robin ratio.
METRICS = (
    "ttft_p50_ms",
    "ttft_p99_ms",
    "latency_p50_ms",
    "latency_p99_ms",
    "requests_per_s",
    "tokens_per_s",
    "prefix_cache_hit_rate",
)
RATIOS = ("ttft_p50_ms", "ttft_p99_ms", "requests_per_s", "tokens_per_s")


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
    ours = point["engines_cpu_s"] + point["gateway_cpu_s"] + point["loadgen_cpu_s"]
    return {
        "strategy": point["strategy"],
        "concurrency": point["concurrency"],
        "round": point["round"],
        "requests": len(point["replies"]),
        "errors": point["errors"],
        "ttft_p50_ms": ttft[0],
        "ttft_p99_ms": ttft[2],
        "latency_p50_ms": latency[0],
        "latency_p99_ms": latency[2],
        "requests_per_s": len(ok) / wall,
        "tokens_per_s": sum(r["completion_tokens"] or 0 for r in ok) / wall,
        "prefix_cache_hit_rate": sum(_delta(point, "prefix_cache_hits")) / queries
        if queries
        else float("nan"),
        "prompt_tokens": queries,
        "engine_requests": [int(n) for n in _delta(point, "chat_requests")],
        "wall_s": wall,
        "background_cores": max(0.0, point["machine_busy_cpu_s"] - ours) / wall,
    }


def _median_row(strategy: str, conc: int, members: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"strategy": strategy, "concurrency": conc, "rounds": len(members)}
    for name in METRICS:
        row[name] = statistics.median(m[name] for m in members)
        row[name + "_rounds"] = [m[name] for m in members]
    row["engine_requests"] = [sum(m["engine_requests"][i] for m in members) for i in range(2)]
    row["requests"] = sum(m["requests"] for m in members)
    row["errors"] = sum(m["errors"] for m in members)
    row["background_cores"] = statistics.median(m["background_cores"] for m in members)
    return row


def _ratio(
    conc: int, medians: dict[str, dict[str, Any]], rounds: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """affinity / round_robin of the medians, and of each round pair (same workload, run
    back to back), for the spread."""
    entry: dict[str, Any] = {"concurrency": conc}
    for name in RATIOS:
        entry[name] = medians[AFFINITY][name] / medians[ROUND_ROBIN][name]
        base = {m["round"]: m[name] for m in rounds[ROUND_ROBIN]}
        entry[name + "_rounds"] = [
            m[name] / base[m["round"]] for m in rounds[AFFINITY] if m["round"] in base
        ]
    return entry


def summarize(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per strategy and concurrency, the median over rounds; ratios affinity / round_robin."""
    rounds = [point_row(p) for p in points]
    groups: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for one in rounds:
        groups[one["concurrency"]][one["strategy"]].append(one)
    rows: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    for conc in sorted(groups):
        medians = {s: _median_row(s, conc, groups[conc][s]) for s in STRATEGIES if groups[conc][s]}
        rows += medians.values()
        if len(medians) == len(STRATEGIES):
            ratios.append(_ratio(conc, medians, groups[conc]))
    first = points[0] if points else {}
    return {
        "rows": rows,
        "ratios": ratios,
        "rounds": rounds,
        "errors": sum(p["errors"] for p in points),
        "error_samples": [s for p in points for s in p["error_samples"]][:5],
        "system_prompt_tokens": first.get("system_prompt_tokens", []),
    }


def _split(requests: Sequence[int]) -> str:
    return " / ".join(str(n) for n in requests)


def _pct(value: float) -> str:
    return "—" if value != value else f"{100 * value:.0f}%"  # NaN != NaN


def _rounds(values: Sequence[float], digits: int = 2) -> str:
    return " / ".join(_f(v, digits) for v in values)


def markdown(machine: dict[str, Any], config: dict[str, Any], summary: dict[str, Any]) -> str:
    key = [
        [
            f"`{r['strategy']}`",
            str(r["concurrency"]),
            f"{r['requests']} ({r['errors']} failed)",
            _f(r["ttft_p50_ms"], 0),
            _f(r["ttft_p99_ms"], 0),
            _f(r["latency_p50_ms"], 0),
            _f(r["latency_p99_ms"], 0),
            _f(r["requests_per_s"]),
            _f(r["tokens_per_s"], 1),
            _pct(r["prefix_cache_hit_rate"]),
            _split(r["engine_requests"]),
            _f(r["background_cores"]),
        ]
        for r in summary["rows"]
    ]
    ratios = [
        [
            str(r["concurrency"]),
            *(
                f"**{r[name]:.2f}** ({_rounds(r[name + '_rounds'])})"
                for name in ("ttft_p50_ms", "ttft_p99_ms", "requests_per_s", "tokens_per_s")
            ),
        ]
        for r in summary["ratios"]
    ]
    per_round = [
        [
            str(r["round"] + 1),
            f"`{r['strategy']}`",
            str(r["concurrency"]),
            _f(r["ttft_p50_ms"], 0),
            _f(r["ttft_p99_ms"], 0),
            _f(r["latency_p50_ms"], 0),
            _f(r["requests_per_s"]),
            _pct(r["prefix_cache_hit_rate"]),
            f"{r['prompt_tokens']:.0f}",
            _split(r["engine_requests"]),
            _f(r["wall_s"], 1),
            _f(r["background_cores"]),
        ]
        for r in summary["rounds"]
    ]
    tokens = summary["system_prompt_tokens"]
    token_range = f"{min(tokens)}-{max(tokens)}" if tokens else "?"
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    engines = config["engines"]
    engine_argv = " ".join(engines["a"]["argv"])
    quick = " (`--quick`: a smoke run, the numbers mean nothing)" if config["quick"] else ""
    out = [
        "# Routing on two real engines: round-robin vs prefix affinity",
        "",
        f"> **One run on a shared, noisy {machine['nproc']}-core machine**{quick}. Both engines, "
        "both gateways and the client share",
        "> its cores with whatever else ran (*background cores*). Compare the ratios within this "
        "run, and the per-round ratios for the spread.",
        "",
        f"- Date: {machine['date_utc']}; commit `{machine['git_commit']}`",
        f"- Machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['platform']}",
        f"- Python {machine['python']}; {packages}",
        f"- Engines: two of `{engine_argv}` (model `{config['model']}`; `--enforce-eager`: no "
        "graph capture, as in the other real-engine scenarios), A with vLLM's default thread "
        "binding (core 0 here), B with `VLLM_CPU_OMP_THREADS_BIND=1`; ready in "
        f"{config['startup_s']:.0f} s",
        f"- Load average at start / end: {machine['load_average_at_start']} / "
        f"{machine.get('load_average_at_end', '?')}",
        f"- Wall time: measured rounds {config['measured_wall_s']:.0f} s, whole scenario "
        f"(engine start to stop) {config['scenario_wall_s']:.0f} s; failed requests: "
        f"{summary['errors']}",
        "",
        "## What was measured",
        "",
        "Two gateways (`uvicorn --factory gateway.app:create_app`), each in front of both "
        "engines (`PORTICO_ENGINES=A,B`), one with `PORTICO_ROUTING__STRATEGY=round_robin` and "
        "one with `affinity` (default settings otherwise: the affinity key is the first 2048 "
        "characters of the messages, so here the system prompt alone; bounded load factor "
        "1.25), both with `PORTICO_CACHE__MODE=off` so every request reaches an engine.",
        "",
        f"Workload: 8 support personas as system prompts of {token_range} tokens each "
        "(the engine's `/tokenize`), a short user question each (16 questions), drawn at "
        f"random; `stream: true`, `max_tokens: {config['routing_max_tokens']}` with "
        "`ignore_eos` (every answer that long), `temperature: 0`. Closed loop at concurrency "
        f"{', '.join(str(c) for c in config['routing_concurrency'])}, "
        f"{config['routing_requests']} requests per round.",
        "",
        f"{config['routing_rounds']} round pairs, interleaved: each pair runs both strategies "
        "back to back on the same (persona, question) sequence, the first one alternating "
        "(ABBA), so drift of the machine hits both alike. Every round puts a fresh random tag "
        "in front of the system prompts: each round starts with both engines' prefix caches "
        "cold for its prompts and cannot profit from an earlier round. Rows below are the "
        "**median over rounds**; ratios are affinity / round_robin of those medians, and in "
        "brackets each pair's own ratio.",
        "",
        "## Affinity / round_robin (below 1 = affinity faster for TTFT; above 1 = more throughput)",
        "",
        *_table(["c", "TTFT p50", "TTFT p99", "requests/s", "completion tokens/s"], ratios),
        "",
        "## Per strategy (median over rounds)",
        "",
        *_table(
            [
                "strategy",
                "c",
                "requests",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "latency p50 ms",
                "latency p99 ms",
                "requests/s",
                "completion tokens/s",
                "prefix-cache hit rate",
                "requests on A / B (all rounds)",
                "background cores",
            ],
            key,
        ),
        "",
        "## Every round",
        "",
        *_table(
            [
                "pair",
                "strategy",
                "c",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "latency p50 ms",
                "requests/s",
                "hit rate",
                "prompt tokens",
                "requests on A / B",
                "wall s",
                "background cores",
            ],
            per_round,
        ),
        "",
        "## Reading the numbers",
        "",
        "- Both engines' KV caches (1 GiB each on CPU, tens of thousands of tokens) hold all 8 "
        "prompts, so nothing is evicted: a request misses the prefix cache only when its "
        "engine has not seen its persona yet in this round, or while a request with the same "
        "persona is still being prefilled there. Round robin sends every persona to both "
        "engines and pays about twice as many cold prefills per round as affinity (16 vs 8 of "
        f"{config['routing_requests']}); the longer a round, the smaller their share. "
        "Affinity gains more when there are more distinct prefixes than one engine's cache "
        "holds (round robin then evicts on both engines) or when prefills are longer.",
        "- Affinity is bounded-load: a persona's engine is skipped while it has "
        "ceil(1.25 * (requests in flight + 1) / 2) or more, so at concurrency 8 some requests "
        "spill to the other engine (and miss there); the A / B split shows the balance.",
        "- TTFT on this CPU is mostly queueing: each engine computes on one core, and a "
        "request's first token waits for the prefills of the requests scheduled with it.",
        "",
        "## Columns",
        "",
        "- **TTFT**: request sent to the first chunk with non-empty `delta.content`, "
        "client-side; **latency**: to `[DONE]`. With a few dozen requests per round, p99 is "
        "about the round's maximum.",
        "- **requests/s**, **completion tokens/s**: successful requests (their usage chunks' "
        "tokens) / the round's wall time.",
        "- **prefix-cache hit rate**: over both engines, the growth of vLLM's "
        "`vllm:prefix_cache_hits_total` / `vllm:prefix_cache_queries_total` (prompt tokens) "
        "during the round. vLLM caches whole 128-token blocks, so even a perfect hit leaves "
        "the question and the prompt's last partial block to compute.",
        "- **requests on A / B**: growth of each engine's "
        '`http_requests_total{handler="/v1/chat/completions"}`, i.e. where requests went, '
        "from the engines, not from the gateway.",
        "- **background cores**: machine-wide busy CPU minus both engines' process trees, the "
        "measured gateway and the client, per wall second: other work on the box.",
        "",
        "## Reproduce",
        "",
        "`make install && .venv/bin/python bench/run.py --scenarios routing` "
        f"(options: `--routing-rounds {config['routing_rounds']}`, `--routing-requests "
        f"{config['routing_requests']}`, `--routing-concurrency "
        f"{' '.join(str(c) for c in config['routing_concurrency'])}`, `--routing-max-tokens "
        f"{config['routing_max_tokens']}`). No Redis needed.",
        "",
    ]
    if summary["error_samples"]:
        out += ["## Failed requests", "", *[f"- `{s}`" for s in summary["error_samples"]], ""]
    out += ["Raw numbers (every request): `routing.json`; plot: `routing.png`.", ""]
    return "\n".join(out)


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="routing: two engines, median over rounds")
    columns = ("strategy", "c", "TTFT p50", "TTFT p99", "req/s", "tok/s", "hit rate", "A / B")
    for column in columns:
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for r in summary["rows"]:
        table.add_row(
            r["strategy"],
            str(r["concurrency"]),
            _f(r["ttft_p50_ms"], 0),
            _f(r["ttft_p99_ms"], 0),
            _f(r["requests_per_s"]),
            _f(r["tokens_per_s"], 1),
            _pct(r["prefix_cache_hit_rate"]),
            _split(r["engine_requests"]),
        )
    console.print(table)
    for r in summary["ratios"]:
        console.print(
            f"c={r['concurrency']}: affinity/round_robin TTFT p50 {r['ttft_p50_ms']:.2f}, "
            f"TTFT p99 {r['ttft_p99_ms']:.2f}, requests/s {r['requests_per_s']:.2f}, "
            f"tokens/s {r['tokens_per_s']:.2f}"
        )
