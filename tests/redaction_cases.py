"""Requests with one e-mail address in each place vLLM 0.32 turns into prompt text
(docs/pii.md lists them), shared by the redaction unit tests and the tests through
the real app. Each case is (route, body); the body holds ``PII`` exactly once."""

from __future__ import annotations

import json
from typing import Any

PII = "jane@example.com"
COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
MODEL = "fake-model"


def _chat(*messages: dict[str, Any], **fields: Any) -> tuple[str, dict[str, Any]]:
    return CHAT, {"model": MODEL, "messages": list(messages), "max_tokens": 5, **fields}


def _user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def _assistant(**fields: Any) -> dict[str, Any]:
    return {"role": "assistant", **fields}


def _call(arguments: Any) -> dict[str, Any]:
    function = {"name": "send_mail", "arguments": arguments}
    return {"id": "call-1", "type": "function", "function": function}


def _tool(description: str = "Sends mail.", parameter: str = "Recipient.") -> dict[str, Any]:
    properties = {"to": {"type": "string", "description": parameter}}
    parameters = {"type": "object", "properties": properties, "required": ["to"]}
    function = {"name": "send_mail", "description": description, "parameters": parameters}
    return {"type": "function", "function": function}


_ASK = {"role": "user", "content": "Hello."}
_IMAGE = {"type": "image_url", "image_url": {"url": "https://img.example/cat.png"}}

# Each one fails on the gateway before the fix: only a string content and the text
# of {"type": "text"} parts (and a completion's prompt) were redacted.
LEAKS: dict[str, tuple[str, dict[str, Any]]] = {
    "part input_text": _chat(_user({"type": "input_text", "text": f"Mail {PII}"})),
    "part output_text": _chat(
        _ASK, _assistant(content=[{"type": "output_text", "text": f"Mail {PII}"}])
    ),
    "part refusal (its field is 'refusal')": _chat(
        _ASK, _assistant(content=[{"type": "refusal", "refusal": f"Not mailing {PII}"}])
    ),
    "part thinking (its field is 'thinking')": _chat(
        _ASK, _assistant(content=[{"type": "thinking", "thinking": f"{PII}?", "closed": True}])
    ),
    "part tool_reference (its field is 'name')": _chat(
        _user({"type": "tool_reference", "name": PII})
    ),
    "extra field of a text part (templates get the part dict)": _chat(
        _user({"type": "text", "text": "Hello.", "note": PII})
    ),
    "text field of a media part (GPT-OSS reads 'text' of any part)": _chat(
        _user({**_IMAGE, "text": f"Mail {PII}"})
    ),
    "message name": _chat({"role": "user", "name": PII, "content": "Hello."}),
    "assistant reasoning": _chat(_ASK, _assistant(content="Done.", reasoning=f"Mail {PII}")),
    "assistant reasoning_content": _chat(
        _ASK, _assistant(content="Done.", reasoning_content=f"Mail {PII}")
    ),
    "tool call arguments (a JSON string)": _chat(
        _ASK, _assistant(content=None, tool_calls=[_call(json.dumps({"to": PII}))])
    ),
    "tool call arguments (an object)": _chat(
        _ASK, _assistant(content=None, tool_calls=[_call({"to": PII})])
    ),
    "tool message content part": _chat(
        _ASK,
        _assistant(content=None, tool_calls=[_call("{}")]),
        {
            "role": "tool",
            "tool_call_id": "call-1",
            "content": [{"type": "input_text", "text": f"Sent to {PII}"}],
        },
    ),
    "developer message tools": _chat(
        {"role": "developer", "content": "Be brief.", "tools": [_tool(f"Mails {PII}.")]}, _ASK
    ),
    "message task": _chat({"role": "user", "content": "Hello.", "task": PII}),
    "tools description": _chat(_ASK, tools=[_tool(description=f"Mails {PII}.")]),
    "tools parameter description": _chat(_ASK, tools=[_tool(parameter=f"e.g. {PII}")]),
    "tool_choice function name": _chat(
        _ASK, tools=[_tool()], tool_choice={"type": "function", "function": {"name": PII}}
    ),
    "documents": _chat(_ASK, documents=[{"title": "Contacts", "text": f"Jane: {PII}"}]),
    "chat_template_kwargs": _chat(_ASK, chat_template_kwargs={"user_email": PII}),
    "response_format schema (Kimi K3 renders it)": _chat(
        _ASK,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "reply",
                "schema": {"type": "object", "description": f"For {PII}"},
            },
        },
    ),
    "completion suffix (rendered by fill-in-the-middle models)": (
        COMPLETIONS,
        {"model": MODEL, "prompt": "def mail():\n", "suffix": f"# to {PII}\n", "max_tokens": 5},
    ),
}

# Part types the gateway does not know: refused when redaction is on (fail closed).
UNKNOWN_PARTS: dict[str, dict[str, Any]] = {
    "file": {"type": "file", "file": {"filename": "a.txt", "file_data": "aGk="}},
    "input_file": {"type": "input_file", "file_data": "aGk="},
    "a made-up type": {"type": "secret_text", "secret_text": PII},
    "no type": {"text": PII},
    "a type that is not a string": {"type": ["text"], "text": PII},
}

# Media parts vLLM 0.32 parses (each with its payload): not text, passed untouched.
MEDIA_PARTS: dict[str, dict[str, Any]] = {
    "image_url": _IMAGE,
    "input_image": {"type": "input_image", "image_url": "https://img.example/a@example.com.png"},
    "image_embeds": {"type": "image_embeds", "image_embeds": "AAAA"},
    "audio_url": {"type": "audio_url", "audio_url": {"url": "https://a.example/415-555-2671.wav"}},
    "input_audio": {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    "audio_embeds": {"type": "audio_embeds", "audio_embeds": "AAAA"},
    "video_url": {"type": "video_url", "video_url": {"url": "https://v.example/clip.mp4"}},
    "video_embeds": {"type": "video_embeds", "video_embeds": "AAAA"},
    "prompt_embeds": {"type": "prompt_embeds", "data": "AAAA"},
    "image_pil": {"type": "image_pil", "image_pil": None, "uuid": "img-1"},
}
