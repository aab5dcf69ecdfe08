"""gateway.prompt_text against the vLLM the engine runs: every content part type vLLM
parses is known to the gateway as text or media, and every field of vLLM's chat,
completion and responses requests is either rewritten or listed here as one the model
never reads. A vLLM upgrade that adds either fails here until someone decides (read
from vLLM's source, not imported: importing vLLM takes seconds)."""

from __future__ import annotations

import ast
import json

import pytest

from gateway.prompt_text import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    MEDIA_PARTS,
    RESPONSES_FIELDS,
    TEXT_PARTS,
    rewrite,
)
from tests.deploy.contract import vllm_source

CHAT_UTILS = "renderers/chat_utils.py"

# Fields of vLLM's requests that never become prompt text, by why.
_SAMPLING = {
    "frequency_penalty", "presence_penalty", "repetition_penalty", "temperature", "top_p",
    "top_k", "min_p", "seed", "n", "max_tokens", "max_completion_tokens", "min_tokens",
    "logit_bias", "logprobs", "top_logprobs", "prompt_logprobs", "logprob_token_ids",
    "allowed_token_ids", "stop", "stop_token_ids", "bad_words", "ignore_eos",
    "include_stop_str_in_output", "use_beam_search", "length_penalty", "watermarking",
    "thinking_token_budget", "repetition_detection",
    # Constrains what is generated; the model does not read it.
    "structured_outputs",
}  # fmt: skip
_DELIVERY = {
    "model", "stream", "stream_options", "echo", "skip_special_tokens",
    "spaces_between_special_tokens", "truncate_prompt_tokens", "truncation_side",
    "add_special_tokens", "return_tokens_as_token_ids", "return_token_ids",
    "return_token_offsets", "return_prompt_text", "routed_experts_prompt_start",
    "mm_payload", "return_mm_kwargs", "stream_interval",
}  # fmt: skip
_ENGINE = {
    "user",  # "ignored by vLLM" (its own comment)
    "priority", "request_id", "session_id", "cache_salt", "kv_transfer_params",
    "ec_transfer_params", "vllm_xargs", "media_io_kwargs", "mm_processor_kwargs",
}  # fmt: skip
_CHAT_ONLY = {
    "parallel_tool_calls", "include_reasoning", "add_generation_prompt",
    "continue_final_message",
    # Rendered by some templates, but a closed set vLLM validates: never free text.
    "reasoning_effort",
}  # fmt: skip
CHAT_NOT_READ = _SAMPLING | _DELIVERY | _ENGINE | _CHAT_ONLY
# A completion's prompt_embeds are base64 tensors spliced in as embeddings; its
# response_format only constrains the output (no completion renderer reads it).
COMPLETION_NOT_READ = _SAMPLING | _DELIVERY | _ENGINE | {"prompt_embeds", "response_format"}
RESPONSES_NOT_READ = _SAMPLING | _DELIVERY | _ENGINE | {
    "max_output_tokens", "max_tool_calls", "parallel_tool_calls", "include_reasoning",
    "prompt_cache_key",  # "not implemented yet, vLLM will ignore it" (its own words)
    # Closed sets or flags: never free text.
    "background", "include", "reasoning", "service_tier", "store", "truncation",
    "enable_response_messages",
    # Returned with the response, never rendered.
    "metadata",
    # Replaced by the gateway with the conversation it names (inlined as input items).
    "previous_response_id",
    # Refused by the gateway (400): history it would neither estimate nor redact.
    "previous_input_messages",
}  # fmt: skip


def _module(relative: str) -> ast.Module:
    return ast.parse(vllm_source(relative))


def _assigned(tree: ast.Module, name: str) -> ast.expr:
    targets: list[ast.expr]
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return value
    raise AssertionError(f"{name} is no longer assigned in vLLM's {CHAT_UTILS}")


def _request_fields(relative: str, name: str) -> set[str]:
    [cls] = [n for n in _module(relative).body if isinstance(n, ast.ClassDef) and n.name == name]
    return {
        node.target.id
        for node in cls.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and not node.target.id.startswith("_")
    }


def test_every_part_type_vllm_parses_is_known_as_text_or_media() -> None:
    tree = _module(CHAT_UTILS)
    parsers = _assigned(tree, "MM_PARSER_MAP")
    assert isinstance(parsers, ast.Dict)
    parsed = {ast.literal_eval(key) for key in parsers.keys if key is not None}
    text = _assigned(tree, "TEXT_PART_TYPES")
    assert isinstance(text, ast.Call)
    vllm_text = ast.literal_eval(text.args[0])
    assert parsed == TEXT_PARTS | MEDIA_PARTS.keys()
    assert vllm_text | {"tool_reference"} == TEXT_PARTS
    assert not TEXT_PARTS & MEDIA_PARTS.keys()


@pytest.mark.parametrize(
    ("relative", "name", "rewritten", "not_read", "extra"),
    [
        ("entrypoints/openai/chat_completion/protocol.py", "ChatCompletionRequest",
         CHAT_FIELDS, CHAT_NOT_READ, {"messages"}),
        ("entrypoints/openai/completion/protocol.py", "CompletionRequest",
         COMPLETION_FIELDS, COMPLETION_NOT_READ, set()),
        ("entrypoints/openai/responses/protocol.py", "ResponsesRequest",
         RESPONSES_FIELDS, RESPONSES_NOT_READ, {"input"}),
    ],
)  # fmt: skip
def test_every_request_field_of_vllm_is_rewritten_or_known_not_to_be_read(
    relative: str, name: str, rewritten: tuple[str, ...], not_read: set[str], extra: set[str]
) -> None:
    fields = _request_fields(relative, name)
    assert not set(rewritten) & not_read
    assert set(rewritten) <= fields, "a field the gateway rewrites is gone from vLLM"
    unclassified = fields - set(rewritten) - not_read - extra
    assert not unclassified, f"new vLLM fields: is each prompt text? {sorted(unclassified)}"


def test_the_walk_reaches_keys_nested_values_and_leaves_numbers() -> None:
    payload = {
        "prompt": [[1, 2, 3]],
        "suffix": "s",
        "user": "u",
    }
    rewrite(payload, route="/v1/completions", edit=str.upper)
    assert payload == {"prompt": [[1, 2, 3]], "suffix": "S", "user": "u"}
    chat = {
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "u",
                                                   "uuid": "i", "alt": "a"}], "name": "n"}],
        "tools": [{"function": {"parameters": {"properties": {"p": {"enum": ["x", 1]}}}}}],
        "stop": ["s"],
    }  # fmt: skip
    rewrite(chat, route="/v1/chat/completions", edit=str.upper)
    assert json.dumps(chat) == json.dumps({
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "u",
                                                   "uuid": "i", "alt": "A"}], "name": "N"}],
        "tools": [{"FUNCTION": {"PARAMETERS": {"PROPERTIES": {"P": {"ENUM": ["X", 1]}}}}}],
        "stop": ["s"],
    })  # fmt: skip
