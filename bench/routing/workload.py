"""The ``routing`` scenario's workload: long system prompts shared by many short questions.

The texts are data, in ``workload.json``: eight support personas of about 500 tokens
each (the report records the engine's own count), longer than the gateway's default
``affinity_prefix_chars`` (2048), so the affinity key is the system prompt alone and
every question under one prompt shares it; the house rules every persona ends with (as a
platform appending its own format instructions would; the text before them differs, so
the prompts share no prefix); 16 short questions; and the regions and product lines of
the variants' desk lines (12 x 8 = 96 distinct lines, enough for 8 x 97 prefixes; the
numbering keeps them distinct beyond).

A workload has N distinct prompts ("prefixes"): prefix i is persona i % 8 in variant
i // 8. Variant 0 is the persona as is (so N = 8 is the original workload); variant
v >= 1 puts a line naming a desk (region and product line) in front of the persona text,
so its prompt differs from the first tokens after the round's tag: no KV block is shared
between variants, and the affinity key differs per prefix. Which prefix and question
each request uses is drawn in ``schedule``.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

PERSONA_COUNT = 8


@functools.cache
def texts() -> dict[str, Any]:
    """``workload.json``, read once."""
    found: dict[str, Any] = json.loads(Path(__file__).with_name("workload.json").read_text())
    if len(found["personas"]) != PERSONA_COUNT:
        raise RuntimeError(f"workload.json holds {len(found['personas'])} personas, not 8")
    return found


def variant_line(variant: int) -> str:
    """Variant 0: none (the persona as is); otherwise a distinct desk line."""
    if variant == 0:
        return ""
    regions, lines = texts()["regions"], texts()["lines"]
    region = regions[(variant - 1) % len(regions)]
    line = lines[((variant - 1) // len(regions)) % len(lines)]
    return (
        f"Desk {variant:03d}, {region} region, {line} customers: you answer for this desk only, "
        "and its customers' accounts are kept apart from every other desk. "
    )


def system_prompt(tag: str, prefix: int) -> str:
    """Prefix ``prefix``'s prompt: persona ``prefix % 8``, variant ``prefix // 8``."""
    persona, variant = prefix % PERSONA_COUNT, prefix // PERSONA_COUNT
    return f"[{tag}] {variant_line(variant)}{texts()['personas'][persona]}{texts()['house_rules']}"


def schedule(requests: int, seed: int, prefixes: int = PERSONA_COUNT) -> list[tuple[int, int]]:
    """(prefix, question) per request, each drawn uniformly with ``seed``.

    Both strategies of one round pair get the same schedule, so neither draws an easier
    sequence (for example, more repeats of one prefix early on).
    """
    rng, questions = random.Random(seed), len(texts()["questions"])
    return [(rng.randrange(prefixes), rng.randrange(questions)) for _ in range(requests)]


def messages(tag: str, prefix: int, question: int) -> list[dict[str, Any]]:
    """One request's messages; ``tag`` leads the system prompt so that each round's prompts
    are new to both engines' prefix caches (a round cannot profit from an earlier one)."""
    return [
        {"role": "system", "content": system_prompt(tag, prefix)},
        {"role": "user", "content": texts()["questions"][question]},
    ]
