"""The ``routing`` scenario's workload: long system prompts shared by many short questions.

Each system prompt is a support persona of about 500 tokens (the report records the
engine's own count), longer than the gateway's default ``affinity_prefix_chars`` (2048),
so the affinity key is the system prompt alone and every question under one prompt
shares it. A workload has N distinct prompts ("prefixes"): prefix i is persona i % 8 in
variant i // 8. Variant 0 is the persona as is (so N = 8 is the original workload);
variant v >= 1 puts a line naming a desk (region and product line) in front of the
persona text, so its prompt differs from the first tokens after the round's tag: no KV
block is shared between variants, and the affinity key differs per prefix. Which prefix
and question each request uses is drawn in ``schedule``.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

# Eight support personas of about 500 tokens each, one paragraph each (blank-line separated).
PERSONAS_FILE = Path(__file__).with_name("personas.txt")
PERSONA_COUNT = 8


@functools.cache
def personas() -> tuple[str, ...]:
    """The persona texts, read once."""
    found = tuple(PERSONAS_FILE.read_text().strip().split("\n\n"))
    if len(found) != PERSONA_COUNT:
        raise RuntimeError(f"{PERSONAS_FILE} holds {len(found)} personas, not {PERSONA_COUNT}")
    return found


QUESTIONS = (
    "What are your opening hours this week?",
    "How much would that cost me in total?",
    "Can I change my booking after paying?",
    "What is your refund policy?",
    "Is there anything I should do before coming in?",
    "How long does it usually take?",
    "Do you offer any discount for students?",
    "Can I do this from my phone?",
    "What happens if I am late?",
    "Who do I contact if something goes wrong?",
    "Is it safe to keep using it as it is?",
    "Can you explain that more simply?",
    "Do I need an appointment?",
    "What is included in the price?",
    "Can someone else pick it up for me?",
    "What do most customers choose?",
)


# Every persona ends with the same house rules, as a platform appending its own format
# instructions would; the text before them differs, so the prompts share no prefix.
HOUSE_RULES = (
    " House rules for every answer: write plain text without Markdown, headings or emoji; "
    "do not mention that you are an AI model or that you follow instructions; if you are "
    "unsure, say so and offer to connect the customer with a person; never collect personal "
    "data beyond a first name and an order or booking reference; and if the customer is "
    "upset, acknowledge it in one sentence before answering."
)


# The variants' leading lines: a desk = region x product line, so up to 12 * 8 = 96
# distinct lines (enough for 8 * 97 prefixes); the numbering keeps them distinct beyond.
REGIONS = (
    "Northern",
    "Southern",
    "Eastern",
    "Western",
    "Central",
    "Coastal",
    "Alpine",
    "Island",
    "Metropolitan",
    "Rural",
    "Overseas",
    "Border",
)
LINES = (
    "consumer",
    "business",
    "premium",
    "student",
    "partner",
    "public sector",
    "wholesale",
    "loyalty",
)


def variant_line(variant: int) -> str:
    """Variant 0: none (the persona as is); otherwise a distinct desk line."""
    if variant == 0:
        return ""
    k = variant - 1
    region = REGIONS[k % len(REGIONS)]
    line = LINES[(k // len(REGIONS)) % len(LINES)]
    return (
        f"Desk {variant:03d}, {region} region, {line} customers: you answer for this desk only, "
        "and its customers' accounts are kept apart from every other desk. "
    )


def system_prompt(tag: str, prefix: int) -> str:
    """Prefix ``prefix``'s prompt: persona ``prefix % 8``, variant ``prefix // 8``."""
    persona, variant = prefix % PERSONA_COUNT, prefix // PERSONA_COUNT
    return f"[{tag}] {variant_line(variant)}{personas()[persona]}{HOUSE_RULES}"


def schedule(requests: int, seed: int, prefixes: int = PERSONA_COUNT) -> list[tuple[int, int]]:
    """(prefix, question) per request, each drawn uniformly with ``seed``.

    Both strategies of one round pair get the same schedule, so neither draws an easier
    sequence (for example, more repeats of one prefix early on).
    """
    rng = random.Random(seed)
    return [(rng.randrange(prefixes), rng.randrange(len(QUESTIONS))) for _ in range(requests)]


def messages(tag: str, prefix: int, question: int) -> list[dict[str, Any]]:
    """One request's messages; ``tag`` leads the system prompt so that each round's prompts
    are new to both engines' prefix caches (a round cannot profit from an earlier one)."""
    return [
        {"role": "system", "content": system_prompt(tag, prefix)},
        {"role": "user", "content": QUESTIONS[question]},
    ]
