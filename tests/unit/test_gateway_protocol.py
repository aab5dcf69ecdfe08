from __future__ import annotations

import json

import pytest

from gateway.errors import InvalidRequest
from gateway.protocol import ChatCompletionRequest, CompletionRequest, parse

CANARY = "c4n4ry-7f3e9b1d"
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}]}
COMPLETION = {"model": "tiny", "prompt": "Once upon a time"}


def _body(base: dict[str, object], **changes: object) -> bytes:
    return json.dumps({**base, **changes}).encode()


def _body_without(base: dict[str, object], field: str) -> bytes:
    return json.dumps({k: v for k, v in base.items() if k != field}).encode()


def test_valid_chat_request_is_parsed() -> None:
    request = parse(ChatCompletionRequest, _body(CHAT, temperature=0.2, max_tokens=16, stream=True))
    assert isinstance(request, ChatCompletionRequest)
    assert request.model == "tiny"
    assert request.messages[0].role == "user"
    assert request.messages[0].content == "Hello"
    assert request.temperature == 0.2
    assert request.max_tokens == 16
    assert request.stream is True


def test_valid_completion_request_is_parsed() -> None:
    request = parse(CompletionRequest, _body(COMPLETION, n=2, stop=["\n"]))
    assert isinstance(request, CompletionRequest)
    assert request.prompt == "Once upon a time"
    assert request.n == 2
    assert request.stop == ["\n"]
    assert request.stream is False


def test_completion_prompt_may_be_token_ids() -> None:
    request = parse(CompletionRequest, _body(COMPLETION, prompt=[1, 2, 3]))
    assert request.prompt == [1, 2, 3]  # type: ignore[union-attr]


def test_chat_content_may_be_a_list_of_parts() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    request = parse(ChatCompletionRequest, _body(CHAT, messages=messages))
    assert request.messages[0].content == [{"type": "text", "text": "Hi"}]  # type: ignore[union-attr]


def test_vllm_extra_fields_pass_through_in_model_extra() -> None:
    request = parse(
        ChatCompletionRequest,
        _body(CHAT, top_k=40, chat_template_kwargs={"enable_thinking": False}),
    )
    assert request.model_extra == {"top_k": 40, "chat_template_kwargs": {"enable_thinking": False}}


def test_stream_options_are_typed() -> None:
    request = parse(
        ChatCompletionRequest, _body(CHAT, stream=True, stream_options={"include_usage": True})
    )
    assert request.stream_options is not None
    assert request.stream_options.include_usage is True


@pytest.mark.parametrize("body", [b"{", b"", b"not json", b'{"model": "tiny",}'])
def test_invalid_json_is_refused_with_code_invalid_json(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        parse(ChatCompletionRequest, body)
    assert excinfo.value.code == "invalid_json"
    assert excinfo.value.status_code == 400
    assert excinfo.value.message == "Request body is not valid JSON."


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_json_that_is_not_an_object_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="must be a JSON object") as excinfo:
        parse(ChatCompletionRequest, body)
    assert excinfo.value.param is None


@pytest.mark.parametrize(
    ("model", "base", "field"),
    [
        (ChatCompletionRequest, CHAT, "model"),
        (ChatCompletionRequest, CHAT, "messages"),
        (CompletionRequest, COMPLETION, "prompt"),
    ],
)
def test_missing_required_field_is_named_in_param(
    model: type[ChatCompletionRequest] | type[CompletionRequest],
    base: dict[str, object],
    field: str,
) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        parse(model, _body_without(base, field))
    assert excinfo.value.param == field
    assert f"'{field}'" in excinfo.value.message
    assert "Field required" in excinfo.value.message


@pytest.mark.parametrize("temperature", [-0.1, 2.5])
def test_out_of_range_temperature_names_temperature(temperature: float) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        parse(ChatCompletionRequest, _body(CHAT, temperature=temperature))
    assert excinfo.value.param == "temperature"
    assert excinfo.value.status_code == 400
    assert excinfo.value.code is None


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_p": 0}, "top_p"),
        ({"n": 0}, "n"),
        ({"messages": []}, "messages"),
        ({"model": ""}, "model"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ],
)
def test_invalid_values_name_their_field(changes: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        parse(ChatCompletionRequest, _body(CHAT, **changes))
    assert excinfo.value.param == param


@pytest.mark.parametrize(
    "changes",
    [
        {"temperature": CANARY},
        {"max_tokens": CANARY},
        {"stream": CANARY},
        {"messages": [{"role": CANARY, "content": "hi"}]},
        {"stream_options": {"include_usage": CANARY}},
        {"temperature": 918273.645},
    ],
)
def test_error_message_never_echoes_the_input_value(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        parse(ChatCompletionRequest, _body(CHAT, **changes))
    rendered = json.dumps(excinfo.value.body())
    assert excinfo.value.param is not None
    assert CANARY not in rendered
    assert "918273" not in rendered


def test_invalid_json_message_never_echoes_the_body() -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        parse(ChatCompletionRequest, b'{"model": "' + CANARY.encode())
    assert CANARY not in json.dumps(excinfo.value.body())
