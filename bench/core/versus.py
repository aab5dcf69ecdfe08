"""Direct vs through the gateway, side by side: the ``engine`` and ``embeddings`` scenarios'
options and plan. Each round runs every concurrency and, at each, both targets, the first
one alternating (direct then gateway, then gateway then direct, ...), so drift of the
machine hits both alike. Every request has its own number (``offset`` + i), so no cache
(the gateway's, which is also told to stay out, or vLLM's prefix cache) favours a target."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from bench.core.stack import API_KEY

DIRECT, GATEWAY = "direct", "gateway"
TARGETS = (DIRECT, GATEWAY)
JSON = {"content-type": "application/json"}
HEADERS = {
    DIRECT: JSON,
    GATEWAY: {**JSON, "authorization": f"Bearer {API_KEY}", "x-portico-cache": "off"},
}


def add_arguments(
    add: Callable[..., Any], name: str, rounds: int, concurrency: list[int], requests: list[int]
) -> None:
    """``--NAME-rounds``, ``--NAME-concurrency`` and ``--NAME-requests``, with ``add``: an
    argument group's ``add_argument``."""
    add(f"--{name}-rounds", type=int, default=rounds, help="interleaved rounds")
    add(f"--{name}-concurrency", type=int, nargs="+", default=concurrency)
    add(
        f"--{name}-requests", type=int, nargs="+", default=requests,
        help=f"per round and target, one number per --{name}-concurrency",
    )  # fmt: skip


def plan(
    args: argparse.Namespace, name: str, urls: dict[str, str], path: str
) -> list[dict[str, Any]]:
    """Every point of every round, from the ``--NAME-*`` options, to ``path`` on each
    target's base URL (``urls``)."""
    rounds, concurrency = getattr(args, f"{name}_rounds"), getattr(args, f"{name}_concurrency")
    requests = getattr(args, f"{name}_requests")
    if len(requests) != len(concurrency):
        raise SystemExit(f"--{name}-requests needs one number per --{name}-concurrency")
    points: list[dict[str, Any]] = []
    for rnd in range(rounds):
        for g, (conc, count) in enumerate(zip(concurrency, requests, strict=True)):
            for target in TARGETS if (rnd + g) % 2 == 0 else TARGETS[::-1]:
                points.append({
                    "index": len(points), "round": rnd, "target": target,
                    "url": urls[target] + path, "headers": HEADERS[target], "concurrency": conc,
                    "requests": count, "offset": sum(p["requests"] for p in points),
                })  # fmt: skip
    return points


def label(event: dict[str, Any]) -> str:
    """A point's name on the progress bar."""
    return f"round {event['round'] + 1} c={event['concurrency']} {event['target']}"
