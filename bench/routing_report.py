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
        "prefixes": point.get("prefixes", 8),
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


def _median_row(
    prefixes: int, strategy: str, conc: int, members: list[dict[str, Any]]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prefixes": prefixes,
        "strategy": strategy,
        "concurrency": conc,
        "rounds": len(members),
    }
    for name in METRICS:
        row[name] = statistics.median(m[name] for m in members)
        row[name + "_rounds"] = [m[name] for m in members]
    row["engine_requests"] = [sum(m["engine_requests"][i] for m in members) for i in range(2)]
    row["requests"] = sum(m["requests"] for m in members)
    row["errors"] = sum(m["errors"] for m in members)
    row["background_cores"] = statistics.median(m["background_cores"] for m in members)
    return row


def _ratio(
    prefixes: int,
    conc: int,
    medians: dict[str, dict[str, Any]],
    rounds: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """affinity / round_robin of the medians, and of each round pair (same workload, run
    back to back), for the spread."""
    entry: dict[str, Any] = {"prefixes": prefixes, "concurrency": conc}
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
    ratios affinity / round_robin. ``workloads``: routing.py's description of each (prompt
    tokens, KV cache), copied into the summary."""
    rounds = [point_row(p) for p in points]
    groups: dict[tuple[int, int], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for one in rounds:
        groups[one["prefixes"], one["concurrency"]][one["strategy"]].append(one)
    rows: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    for prefixes, conc in sorted(groups):
        group = groups[prefixes, conc]
        medians = {s: _median_row(prefixes, s, conc, group[s]) for s in STRATEGIES if group[s]}
        rows += medians.values()
        if len(medians) == len(STRATEGIES):
            ratios.append(_ratio(prefixes, conc, medians, group))
    return {
        "workloads": list(workloads),
        "rows": rows,
        "ratios": ratios,
        "rounds": rounds,
        "errors": sum(p["errors"] for p in points),
        "error_samples": [s for p in points for s in p["error_samples"]][:5],
    }


def fit(workload: dict[str, Any]) -> str:
    """How the workload's prompts compare with one engine's KV cache."""
    if workload["cache_ratio"] <= 1:
        return "fits one engine"
    if workload["cache_ratio"] / 2 <= 1:
        return "exceeds one engine; half fits"
    return "exceeds one engine, even half"


def workload_label(workload: dict[str, Any]) -> str:
    return (
        f"{workload['prefixes']} prefixes, {workload['total_prompt_tokens']} prompt tokens = "
        f"{workload['cache_ratio']:.2f} x KV cache ({fit(workload)})"
    )


def _split(requests: Sequence[int]) -> str:
    return " / ".join(str(n) for n in requests)


def _pct(value: float) -> str:
    return "—" if value != value else f"{100 * value:.0f}%"  # NaN != NaN


def _rounds(values: Sequence[float], digits: int = 2) -> str:
    return " / ".join(_f(v, digits) for v in values)


def markdown(machine: dict[str, Any], config: dict[str, Any], summary: dict[str, Any]) -> str:
    key = [
        [
            str(r["prefixes"]),
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
    by_prefixes = {w["prefixes"]: w for w in summary["workloads"]}
    hit = {
        (r["prefixes"], r["concurrency"], r["strategy"]): r["prefix_cache_hit_rate"]
        for r in summary["rows"]
    }
    ratios = [
        [
            str(r["prefixes"]),
            _f(by_prefixes[r["prefixes"]]["cache_ratio"]) if r["prefixes"] in by_prefixes else "?",
            str(r["concurrency"]),
            *(
                f"**{r[name]:.2f}** ({_rounds(r[name + '_rounds'])})"
                for name in ("ttft_p50_ms", "ttft_p99_ms", "requests_per_s", "tokens_per_s")
            ),
            f"{_pct(hit[r['prefixes'], r['concurrency'], ROUND_ROBIN])} / "
            f"{_pct(hit[r['prefixes'], r['concurrency'], AFFINITY])}",
        ]
        for r in summary["ratios"]
    ]
    per_round = [
        [
            str(r["prefixes"]),
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
    loads = [
        [
            f"{w['prefixes']}{' (auto)' if w['auto'] else ''}",
            f"{min(w['prompt_tokens'])}-{max(w['prompt_tokens'])}",
            str(w["total_prompt_tokens"]),
            f"{w['kv_cache_tokens']} ({w['kv_cache_blocks']} x {w['block_size']})",
            f"**{w['cache_ratio']:.2f}**",
            f"{w['prompt_blocks']} / {w['kv_cache_blocks']}",
            fit(w),
            str(w["requests"]),
        ]
        for w in summary["workloads"]
    ]
    kv = summary["workloads"][0] if summary["workloads"] else {}
    kv_text = (
        f"{kv['kv_cache_tokens']} tokens ({kv['kv_cache_blocks']} blocks of {kv['block_size']})"
        if kv
        else "?"
    )
    kv_blocks = config.get("routing_kv_blocks", 0)
    kv_how = (
        f"`--num-gpu-blocks-override={kv_blocks}` (`--routing-kv-blocks`), not the engine's "
        "1 GiB default, so a workload bigger than the cache reaches eviction within a round"
        if kv_blocks
        else "the engine's default (1 GiB on CPU)"
    )
    requests = ", ".join(
        f"{w['requests']} ({w['prefixes']} prefixes)" for w in summary["workloads"]
    )
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
        f"- KV cache per engine: **{kv_text}** (`vllm:cache_config_info` on the engine's "
        f"`/metrics`), set with {kv_how}",
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
        "Workloads: N distinct system prompts (*prefixes*) of ~500 tokens each (the engine's "
        "`/tokenize`): 8 support personas, and for N > 8 the same personas in variants whose "
        "prompt starts with a distinct desk line (region, customer line) before the persona "
        "text, so variants share no KV block and have distinct affinity keys. A short user "
        "question each (16 questions); prefix and question drawn uniformly at random; "
        f"`stream: true`, `max_tokens: {config['routing_max_tokens']}` with `ignore_eos` "
        "(every answer that long), `temperature: 0`. Closed loop at concurrency "
        f"{', '.join(str(c) for c in config['routing_concurrency'])}; requests per round: "
        f"{requests}.",
        "",
        *_table(
            [
                "prefixes",
                "prompt tokens each",
                "all prompts, tokens",
                "KV cache per engine, tokens",
                "all prompts / KV cache",
                "cached blocks of all prompts / cache blocks",
                "fit",
                "requests per round",
            ],
            loads,
        ),
        "",
        f"{config['routing_rounds']} round pairs, interleaved: each pair runs both strategies "
        "back to back on the same (prefix, question) sequence, the first one alternating "
        "(ABBA), so drift of the machine hits both alike. Every round puts a fresh random tag "
        "in front of the system prompts: each round starts with both engines' prefix caches "
        "cold for its prompts and cannot profit from an earlier round. Rows below are the "
        "**median over rounds**; ratios are affinity / round_robin of those medians, and in "
        "brackets each pair's own ratio.",
        "",
        "## Affinity / round_robin (below 1 = affinity faster for TTFT; above 1 = more throughput)",
        "",
        *_table(
            [
                "prefixes",
                "prompts / KV cache",
                "c",
                "TTFT p50",
                "TTFT p99",
                "requests/s",
                "completion tokens/s",
                "hit rate round_robin / affinity",
            ],
            ratios,
        ),
        "",
        "## Per strategy (median over rounds)",
        "",
        *_table(
            [
                "prefixes",
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
                "prefixes",
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
        "- **Prompts that fit one engine's cache** (all prompts / KV cache below 1): nothing is "
        "evicted; a request misses the prefix cache only when its engine has not seen its "
        "prefix yet in this round, or while a request with the same prefix is still being "
        "prefilled there. Round robin sends every prefix to both engines and pays about twice "
        "as many cold prefills per round as affinity (2N vs N); the longer a round, the "
        "smaller their share.",
        "- **Prompts that exceed one engine's cache but half of them fits** (ratio between 1 "
        "and 2): round robin sends every prefix to both engines, each engine's cache holds "
        "only part of them and evicts (least recently used) the ones the next requests need; "
        "affinity gives each engine about half of the prefixes, which stay cached. With N "
        "prefixes and R requests per round, each prefix comes back about R / N times per "
        "round (R / 2N per engine under round robin): the first time is a miss under both "
        "strategies (2N cold prefills per round for round robin, N for affinity), and the "
        "cache fills only partway through a round, so at a few repeats per prefix most of "
        "the gap is still cold prefills; eviction adds to it as R / N grows (a longer "
        "round, or faster prefill than this CPU's).",
        "- Affinity is bounded-load: a prefix's engine is skipped while it has "
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
        f"(options: `--routing-rounds {config['routing_rounds']}`, `--routing-prefixes "
        f"{' '.join(str(v) for v in config['routing_prefixes'])}`, `--routing-requests "
        f"{' '.join(str(v) for v in config['routing_requests'])}`, `--routing-kv-blocks "
        f"{config['routing_kv_blocks']}`, `--routing-concurrency "
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
    columns = (
        "prefixes",
        "strategy",
        "c",
        "TTFT p50",
        "TTFT p99",
        "req/s",
        "tok/s",
        "hit rate",
        "A / B",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for r in summary["rows"]:
        table.add_row(
            str(r["prefixes"]),
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
            f"{r['prefixes']} prefixes, c={r['concurrency']}: affinity/round_robin TTFT p50 "
            f"{r['ttft_p50_ms']:.2f}, TTFT p99 {r['ttft_p99_ms']:.2f}, "
            f"requests/s {r['requests_per_s']:.2f}, tokens/s {r['tokens_per_s']:.2f}"
        )
