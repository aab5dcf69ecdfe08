"""Hand-craft the answers the bundled model cannot be made to give, from a recorded one.

Usage: ``.venv/bin/python -m tests.gateway.data.craft_answers``

- ``crafted_chat_reasoning.json``: what vLLM 0.32 sends with a reasoning parser
  (``--reasoning-parser``; the 135M model has no thinking tokens): the first
  content deltas of each choice become ``{"reasoning": ...}`` deltas (vLLM's
  ``DeltaMessage(reasoning=...)`` serialised with ``exclude_unset``), and the body's
  ``message.reasoning`` holds that text, ``message.content`` the rest.
- ``crafted_chat_refusal.json``: vLLM never sets ``refusal`` (its ``ChatMessage``
  has the field, always null); OpenAI's shape: ``message.content`` null and
  ``message.refusal`` the text, ``{"refusal": ...}`` deltas in the stream.

Both start from ``recorded_chat_text.json``; everything else (ids, logprobs, usage,
event order) is as recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
REASONING_PIECES = 3  # content deltas per choice that become reasoning


def _craft(
    recorded: dict[str, Any],
    delta: Callable[[dict[str, Any], int], None],
    message: Callable[[dict[str, Any], list[str]], None],
) -> dict[str, Any]:
    crafted = dict(recorded)
    pieces: dict[int, list[str]] = {}
    for shape in ("stream", "stream_usage_only"):
        seen: dict[int, int] = {}
        events = []
        for data in recorded[shape]:
            if data == "[DONE]":
                events.append(data)
                continue
            event = json.loads(data)
            for choice in event["choices"]:
                content = choice["delta"].get("content")
                if content:
                    position = seen[choice["index"]] = seen.get(choice["index"], -1) + 1
                    if shape == "stream":
                        pieces.setdefault(choice["index"], []).append(content)
                    delta(choice["delta"], position)
            events.append(json.dumps(event, separators=(",", ":"), ensure_ascii=False))
        crafted[shape] = events
    body = json.loads(recorded["body"])
    for choice in body["choices"]:
        message(choice["message"], pieces[choice["index"]])
    crafted["body"] = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return crafted


def _to_reasoning(delta: dict[str, Any], position: int) -> None:
    if position < REASONING_PIECES:
        delta["reasoning"] = delta.pop("content")


def _split_reasoning(message: dict[str, Any], pieces: list[str]) -> None:
    reasoning = "".join(pieces[:REASONING_PIECES])
    assert message["content"].startswith(reasoning)
    message["reasoning"] = reasoning
    message["content"] = message["content"][len(reasoning) :]


def _to_refusal(delta: dict[str, Any], _: int) -> None:
    delta["refusal"] = delta.pop("content")


def _refuse(message: dict[str, Any], _: list[str]) -> None:
    message["refusal"], message["content"] = message["content"], None


def craft() -> None:
    recorded = json.loads((HERE / "recorded_chat_text.json").read_text())
    for name, delta, message in (
        ("reasoning", _to_reasoning, _split_reasoning),
        ("refusal", _to_refusal, _refuse),
    ):
        path = HERE / f"crafted_chat_{name}.json"
        path.write_text(json.dumps(_craft(recorded, delta, message), indent=1) + "\n")
        print(path)


if __name__ == "__main__":
    craft()
