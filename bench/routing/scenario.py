"""The ``routing`` scenario: round-robin vs prefix-affinity over two real vLLM CPU engines.

Starts two engines once (A with vLLM's default thread binding, core 0 here; B with
``VLLM_CPU_OMP_THREADS_BIND=1``, so each computes on its own core as two hosts would),
each with a KV cache of ``--routing-kv-blocks`` blocks, and one gateway per strategy in
front of both, with the response cache off. Then, per workload (``--routing-prefixes``:
N distinct system prompts of ~500 tokens, short questions; see workload.py),
interleaved rounds driven by :mod:`bench.routing.client`, and writes
routing.{md,json,png}. See bench/README.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import secrets
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from bench.core.drive import drive
from bench.core.machine import describe, stamp_end
from bench.core.procs import REPO, Service, engine_service, fetch, gateway_service, running
from bench.core.report import config_of, publish, show, subtitle
from bench.core.stack import API_KEY, ENGINE_FLAGS, EXTRA_PACKAGES, first_model
from bench.routing import report
from bench.routing.report import STRATEGIES
from bench.routing.workload import PERSONA_COUNT, schedule, system_prompt

SCENARIO = "routing"
# Engine B's extra environment: the e2e routing test's way to give it core 1.
ENGINE_ENVS = {"a": {}, "b": {"VLLM_CPU_OMP_THREADS_BIND": "1"}}
# Default KV cache per engine, in vLLM blocks of 128 tokens: 6144 tokens. The engines'
# own default (1 GiB on CPU, ~23k tokens here) takes ~100 s of prefill per engine to fill
# on this CPU (~250 prompt tokens/s per core), so a workload bigger than it could not
# reach eviction, let alone a steady state, within a round of a minute or two. 48 blocks
# still hold the 8-prefix workload (~30 blocks) with room for the requests in flight.
KV_BLOCKS = 48
# ``--routing-prefixes auto``: N x prompt tokens ~ this many times one engine's KV cache
# (round robin sends all N to both engines and evicts; affinity gives each half, ~0.75x).
AUTO_CACHE_RATIO = 1.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("routing scenario (two real engines)")
    add = group.add_argument
    add("--routing-rounds", type=int, default=3, help="round pairs (one round per strategy)")
    add(
        "--routing-prefixes", type=_prefixes, nargs="+", default=[8, "auto"],
        help="workloads, one per value: N distinct system prompts (8 personas x variants), "
        f"or 'auto': the N nearest {AUTO_CACHE_RATIO} x one engine's KV cache "
        "(kv_cache_size_tokens from its /metrics) / the mean prompt tokens "
        "(default: 8 auto, i.e. one that fits the cache and one that exceeds it)",
    )  # fmt: skip
    add(
        "--routing-requests", type=int, nargs="+", default=[40, 80],
        help="per round, one per workload (the last one for any further workload)",
    )  # fmt: skip
    add("--routing-concurrency", type=int, nargs="+", default=[8])
    add("--routing-max-tokens", type=int, default=16)
    add(
        "--routing-kv-blocks", type=int, default=KV_BLOCKS,
        help="each engine's KV cache in 128-token blocks (vLLM's --num-gpu-blocks-override); "
        "0: the engine's default (1 GiB on CPU)",
    )  # fmt: skip


def _prefixes(value: str) -> int | str:
    if value == "auto":
        return value
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("--routing-prefixes: 'auto' or a count >= 1")
    return n


def apply_quick(args: argparse.Namespace) -> None:
    args.routing_rounds, args.routing_requests, args.routing_concurrency = 1, [8], [4]


@dataclass
class Stack:
    engines: dict[str, Service]
    gateways: dict[str, Service]  # by strategy
    model: str
    startup_s: float


def engine_flags(kv_blocks: int) -> tuple[str, ...]:
    extra = (f"--extra-args=--num-gpu-blocks-override={kv_blocks}",) if kv_blocks else ()
    return (*ENGINE_FLAGS, *extra)


@contextmanager
def routing_stack(args: argparse.Namespace, log_dir: Path, console: Console) -> Iterator[Stack]:
    """Both engines and both gateways, ready; all stopped on the way out, whatever happens."""
    flags, timeout = engine_flags(args.routing_kv_blocks), args.engine_startup_timeout
    engines = {
        name: engine_service(
            f"engine-{name}", log_dir / f"routing-engine-{name}.log", flags, timeout, env
        )
        for name, env in ENGINE_ENVS.items()
    }
    with ExitStack() as stack:
        started = time.monotonic()
        # Started together: loading is mostly waiting on imports and disk, and this halves
        # the scenario's fixed cost.
        with console.status("starting two vLLM CPU engines (--enforce-eager, about 1-3 min)"):
            stack.enter_context(running(list(engines.values())))
            deadline = time.monotonic() + 60
            model = first_model(engines["a"].base_url, deadline)
            first_model(engines["b"].base_url, deadline)
        startup_s = time.monotonic() - started
        console.print(f"engines ready in {startup_s:.0f} s: {model}")
        env = {"PORTICO_ENGINES": ",".join(e.base_url for e in engines.values())}
        # Repeated questions must reach an engine: only its prefix cache is compared.
        env |= {"PORTICO_API_KEYS": API_KEY, "PORTICO_CACHE__MODE": "off"}
        gateways = {
            s: gateway_service(
                f"gateway-{s}",
                log_dir / f"routing-gateway-{s}.log",
                env | {"PORTICO_ROUTING__STRATEGY": s},
            )
            for s in STRATEGIES
        }
        with console.status("starting one gateway per strategy"):
            stack.enter_context(running(list(gateways.values())))
        yield Stack(engines, gateways, model, startup_s)


def kv_cache(base_url: str) -> dict[str, int]:
    """One engine's KV cache, from its ``vllm:cache_config_info`` labels: tokens, blocks,
    block size."""
    for family in text_string_to_metric_families(fetch(base_url + "/metrics").decode()):
        for labels in (s.labels for s in family.samples if s.name == "vllm:cache_config_info"):
            blocks = int(labels.get("num_gpu_blocks") or labels["num_cpu_blocks"])
            size, text = int(labels["block_size"]), labels.get("kv_cache_size_tokens")
            tokens = int(text) if text not in (None, "", "None") else blocks * size
            return {"tokens": tokens, "blocks": blocks, "block_size": size}
    raise RuntimeError(f"no vllm:cache_config_info on {base_url}/metrics")


def prompt_tokens(base_url: str, model: str, prefixes: int) -> list[int]:
    """Each system prompt's length in the engine's own tokens (vLLM's ``/tokenize``)."""
    bodies = ({"model": model, "prompt": system_prompt("00000000", p)} for p in range(prefixes))
    return [int(json.loads(fetch(base_url + "/tokenize", body))["count"]) for body in bodies]


def auto_prefixes(kv_tokens: int, mean_tokens: float) -> int:
    """The N nearest AUTO_CACHE_RATIO x the cache / the mean prompt (prefixes beyond a
    multiple of 8 give the first personas one variant more)."""
    return max(1, round(AUTO_CACHE_RATIO * kv_tokens / mean_tokens))


def workloads(args: argparse.Namespace, stack: Stack, console: Console) -> list[dict[str, Any]]:
    """Each ``--routing-prefixes`` value resolved: N, requests per round, every prompt's
    tokens, and how their total compares with one engine's KV cache."""
    cache = kv_cache(stack.engines["a"].base_url)
    # One per workload; the last one also for any further workload.
    requests = args.routing_requests
    out = []
    for k, value in enumerate(args.routing_prefixes):
        if value == "auto":
            # The variant line adds a few tokens; the variants' mean is close to this.
            base = prompt_tokens(stack.engines["a"].base_url, stack.model, 2 * PERSONA_COUNT)
            value = auto_prefixes(cache["tokens"], statistics.mean(base))
        tokens = prompt_tokens(stack.engines["a"].base_url, stack.model, value)
        # vLLM caches whole blocks: what a prompt leaves in the cache once computed.
        blocks = sum(t // cache["block_size"] for t in tokens)
        workload = {
            "prefixes": value, "auto": args.routing_prefixes[k] == "auto",
            "requests": requests[min(k, len(requests) - 1)], "prompt_tokens": tokens,
            "total_prompt_tokens": sum(tokens), "prompt_blocks": blocks,
            "kv_cache_tokens": cache["tokens"], "kv_cache_blocks": cache["blocks"],
            "block_size": cache["block_size"], "cache_ratio": sum(tokens) / cache["tokens"],
        }  # fmt: skip
        out.append(workload)
    show(console, "routing workloads", report.WORKLOADS, out)
    return out


def plan(
    args: argparse.Namespace, stack: Stack, loads: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every measured point. Round pairs alternate which strategy goes first (ABBA), so a
    slow drift of the shared machine favours neither; both rounds of a pair send the same
    (prefix, question) sequence, each under its own fresh tag. Every pair runs every
    workload, so drift hits the workloads alike too."""
    points: list[dict[str, Any]] = []
    for pair in range(args.routing_rounds):
        for load in loads:
            sequence = schedule(load["requests"], seed=pair, prefixes=load["prefixes"])
            for conc in args.routing_concurrency:
                fields = {"concurrency": conc, "prefixes": load["prefixes"], "round": pair}
                fields["schedule"] = sequence
                for strategy in STRATEGIES if pair % 2 == 0 else STRATEGIES[::-1]:
                    points.append(_point(stack, strategy, index=len(points), **fields))
    return points


def _point(stack: Stack, strategy: str, tag: str = "", **fields: Any) -> dict[str, Any]:
    """A point through ``strategy``'s gateway (``fields``: concurrency, schedule, prefixes),
    under a fresh random tag after ``tag``."""
    gateway = stack.gateways[strategy]
    url = gateway.base_url + "/v1/chat/completions"
    fields |= {"gateway_pid": gateway.pid, "tag": tag + secrets.token_hex(4)}
    return {"strategy": strategy, "url": url, **fields}


def _config(
    args: argparse.Namespace, stack: Stack, wall_s: float, loads: list[dict[str, Any]]
) -> dict[str, Any]:
    flags = engine_flags(args.routing_kv_blocks)
    argv = ["python", "-m", "portico", "engine", "serve", "--port", "P", *flags]
    return config_of(args) | {
        "engines": {
            name: {"argv": argv, "env": ENGINE_ENVS[name], "url": e.base_url}
            for name, e in stack.engines.items()
        },
        "model": stack.model,
        "startup_s": stack.startup_s,
        "measured_wall_s": wall_s,
        "workloads": loads,
    }


def _label(event: dict[str, Any]) -> str:
    return (
        f"round {event['round'] + 1} {event['prefixes']} prefixes "
        f"c={event['concurrency']} {event['strategy']}"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """The whole scenario, engines included; 0 if every request succeeded."""
    log_dir = args.out / "logs"
    machine = describe(REPO, EXTRA_PACKAGES)
    started = time.monotonic()
    with routing_stack(args, log_dir, console) as stack:
        loads = workloads(args, stack, console)
        points = plan(args, stack, loads)
        engines = list(stack.engines.values())
        job = {
            "scenario": SCENARIO, "model": stack.model, "api_key": API_KEY,
            "max_tokens": args.routing_max_tokens, "engines": [e.base_url for e in engines],
            "engine_pids": [e.pid for e in engines], "points": points,
        }  # fmt: skip
        warm = {"concurrency": 4, "schedule": schedule(8, seed=-1), "prefixes": PERSONA_COUNT}
        job["warmup"] = [_point(stack, s, "warmup-", **warm) for s in STRATEGIES]
        total = sum(len(p["schedule"]) for p in points)
        measured = time.monotonic()
        log = log_dir / "routing-load.log"
        results = drive("bench.routing.client", job, total, log, console, _label)
        measured_s = time.monotonic() - measured
    stamp_end(machine)
    config = _config(args, stack, measured_s, loads)
    config["scenario_wall_s"] = time.monotonic() - started
    summary = report.summarize(results, loads)
    payload = {"machine": machine, "config": config, "summary": summary, "points": results}
    report.print_summary(console, summary)
    console.print(f"scenario {config['scenario_wall_s']:.0f} s")
    plot = functools.partial(report.plot, summary, sub=subtitle(machine))
    markdown = report.markdown(machine, config, summary)
    return publish(console, args.out, SCENARIO, markdown, payload, plot, summary)
