"""Where a generation request holds text the model reads, and one walk that rewrites it.

Read off vLLM 0.32's own parsing (``vllm/renderers/chat_utils.py``, the chat
templates' inputs in ``ChatCompletionRequest.build_chat_params``, the renderers
for fill-in-the-middle, Kimi K3 and GPT-OSS); docs/pii.md has the list, and
tests/unit/test_gateway_prompt_text.py fails when a vLLM upgrade adds a part type
or a request field this module has not classified.

- A completion's ``prompt`` (a string or each string of a list; token ids are not
  text) and its ``suffix`` (fill-in-the-middle models render it); an embeddings
  request's ``input``, read the same way.
- Every chat message, whole but for its ``role``: ``content`` part by part (below),
  and ``name``, ``reasoning``, ``reasoning_content``, ``tool_calls`` (arguments
  included), ``tool_call_id``, a developer message's ``tools``, ``task``, ... —
  templates may render any of them, so none is singled out.
- A content part by its ``type``: every string of a text part (``text``,
  ``input_text``, ``output_text``, ``refusal``, ``thinking``, ``tool_reference``:
  their text sits in ``text``, ``refusal``, ``thinking`` or ``name``); a media part
  keeps its payload (a URL or encoded bytes, never read as text) but every other
  string is text (GPT-OSS's renderer reads ``text`` from a part of any type). Any
  other type, or none, is refused: fail closed rather than guess.
- The chat fields templates receive: ``tools``, ``tool_choice``, ``documents``,
  ``chat_template``, ``chat_template_kwargs``, ``response_format`` (Kimi K3
  renders the last two's schema).
- A Responses API request (vLLM turns it into chat messages): ``input`` as a
  string, or every input item whole but for what labels it (``type``, ``role``,
  ``id``, ``status``), content parts as above; and ``instructions``, ``tools``,
  ``tool_choice``, ``text`` (its format's schema), ``prompt`` (a template's
  variables), ``chat_template_kwargs``.

Inside those, dict keys count as text too (a JSON-schema property name is
rendered); a walk stops at nothing, so nested schemas and documents are covered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.errors import InvalidRequest

Edit = Callable[[str], str]

# vLLM's TEXT_PART_TYPES plus tool_reference, whose name the template expands.
TEXT_PARTS = frozenset(
    {"text", "input_text", "output_text", "refusal", "thinking", "tool_reference"}
)
# The other types vLLM parses (MM_PARSER_MAP), each with the key of its payload.
MEDIA_PARTS: dict[str, str] = {
    "image_url": "image_url",
    "input_image": "image_url",
    "image_embeds": "image_embeds",
    "image_pil": "image_pil",
    "audio_url": "audio_url",
    "input_audio": "input_audio",
    "audio_embeds": "audio_embeds",
    "video_url": "video_url",
    "video_embeds": "video_embeds",
    "prompt_embeds": "data",
}
# Never text: what a part is, and the id vLLM caches media under.
_PART_LABELS = frozenset({"type", "uuid"})

CHAT_FIELDS: tuple[str, ...] = (
    "tools",
    "tool_choice",
    "documents",
    "chat_template",
    "chat_template_kwargs",
    "response_format",
)
COMPLETION_FIELDS: tuple[str, ...] = ("prompt", "suffix")
# An embeddings request's text is its "input" (token ids, again, are not text); the
# gateway refuses vLLM's chat-style embeddings ("messages"), so that is all of it.
EMBEDDING_FIELDS: tuple[str, ...] = ("input",)
RESPONSES_FIELDS: tuple[str, ...] = (
    "instructions",
    "tools",
    "tool_choice",
    "text",
    "prompt",
    "chat_template_kwargs",
)
# What labels a Responses API input item; never rendered as text.
_ITEM_LABELS = frozenset({"role", "type", "id", "status"})


def rewrite(payload: dict[str, Any], route: str, edit: Edit) -> None:
    """Apply ``edit`` to every string of ``payload`` (a parsed request body of
    ``route``) that the model reads, in place. InvalidRequest (400) names a content
    part of unknown type."""
    if route == "/v1/chat/completions":
        _messages(payload, "messages", frozenset({"role"}), edit)
        fields = CHAT_FIELDS
    elif route == "/v1/responses":
        if isinstance(payload.get("input"), str):
            payload["input"] = edit(payload["input"])
        _messages(payload, "input", _ITEM_LABELS, edit)
        fields = RESPONSES_FIELDS
    else:
        fields = COMPLETION_FIELDS + EMBEDDING_FIELDS  # a body has one route's fields
    for name in fields:
        if name in payload:
            payload[name] = strings(payload[name], edit)


def _messages(payload: dict[str, Any], name: str, labels: frozenset[str], edit: Edit) -> None:
    messages = payload.get(name)
    if not isinstance(messages, list):
        return
    for index, message in enumerate(messages):
        if isinstance(message, dict):
            _message(message, f"{name}.{index}", labels, edit)


def _message(message: dict[str, Any], where: str, labels: frozenset[str], edit: Edit) -> None:
    for name, value in message.items():
        if name == "content" and isinstance(value, list):
            message[name] = [_part(part, f"{where}.content.{j}", edit)
                             for j, part in enumerate(value)]  # fmt: skip
        elif name not in labels:
            message[name] = strings(value, edit)


def _part(part: Any, where: str, edit: Edit) -> Any:
    if isinstance(part, str):  # vLLM renders a bare string in a content list as text
        return edit(part)
    if not isinstance(part, dict):
        return part
    kind = part.get("type")
    if not isinstance(kind, str) or (kind not in TEXT_PARTS and kind not in MEDIA_PARTS):
        raise InvalidRequest(
            "With PII redaction on, a content part must have one of the types "
            f"{', '.join(sorted(TEXT_PARTS | MEDIA_PARTS.keys()))}.",
            param=f"{where}.type",
            code="unsupported_content_part",
        )
    kept = _PART_LABELS | {MEDIA_PARTS.get(kind, "type")}
    return {key: value if key in kept else strings(value, edit) for key, value in part.items()}


def strings(value: Any, edit: Edit) -> Any:
    """``value`` (parsed JSON) with ``edit`` applied to every string in it, keys included;
    numbers (a prompt's token ids) and the rest are left as they are."""
    if isinstance(value, str):
        return edit(value)
    if isinstance(value, list):
        return [strings(item, edit) for item in value]
    if isinstance(value, dict):
        return {edit(key): strings(item, edit) for key, item in value.items()}
    return value
