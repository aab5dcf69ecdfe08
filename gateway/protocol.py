"""OpenAI wire models for the requests the gateway accepts.

The base is permissive (``extra="allow"``): vLLM's own fields (``top_k``,
``guided_json``, ``chat_template_kwargs``, ...) pass through. The gateway only
types the fields it checks or reads; the engine receives the client's original
bytes, not a re-serialisation of these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import InvalidRequest


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="allow")


NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]


class StreamOptions(OpenAIModel):
    include_usage: bool | None = None


class SamplingRequest(OpenAIModel):
    """Fields shared by both generation routes."""

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    n: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None  # vLLM's range
    stop: str | list[str] | None = None
    user: str | None = None


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    best_of: PositiveInt | None = None
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool | None = None
    suffix: str | None = None


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: PositiveInt | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None


GenerationRequest = CompletionRequest | ChatCompletionRequest

_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "literal"})


def _is_type_tag(part: str | int) -> bool:
    """pydantic puts union member names ('str', 'list[int]') into error locations;
    clients want the field path only (``stop``, ``messages.0.content``)."""
    return isinstance(part, str) and (part.lower() in _TYPE_TAGS or "[" in part or "-" in part)


def parse(model: type[GenerationRequest], body: bytes) -> GenerationRequest:
    """Validate a request body; the first problem becomes a 400 naming its field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = [str(part) for part in first["loc"] if not _is_type_tag(part)]
        if first["type"] == "json_invalid":
            raise InvalidRequest("Request body is not valid JSON.", code="invalid_json") from exc
        if first["type"] == "model_type" and not loc:
            raise InvalidRequest("Request body must be a JSON object.") from exc
        param = ".".join(loc) or None
        # The message names the field and the rule, never echoes the input.
        raise InvalidRequest(f"Invalid value for '{param}': {first['msg']}.", param=param) from exc
