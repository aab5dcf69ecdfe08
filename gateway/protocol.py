"""OpenAI wire models for the requests the gateway accepts.

The base is permissive (``extra="allow"``): vLLM's own sampling fields
(``top_k``, ``structured_outputs``, ``chat_template_kwargs``, ...) pass through.
The few vLLM fields that would let one tenant steer the engine beyond its own
answer (how output is batched and so counted, its place in the engine's queue,
engine internals) are refused by name: :data:`ENGINE_CONTROL_FIELDS`. The
gateway only types the fields it checks or reads; the engine receives the
client's original bytes plus the gateway's own fields appended (see
``gateway.generation``), never a re-serialisation of these models.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.errors import InvalidRequest


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="allow")


NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]


# vLLM request fields a tenant may not set: each changes something beyond its own
# answer. stream_interval batches tokens per SSE event (what a stream's charge
# used to be counted by); priority reorders the engine's queue against other
# tenants; the transfer parameters and vllm_xargs reach engine internals and
# plugins; chat_template runs a client-supplied Jinja template on the engine.
ENGINE_CONTROL_FIELDS = (
    "stream_interval",
    "priority",
    "kv_transfer_params",
    "ec_transfer_params",
    "vllm_xargs",
    "chat_template",
)


class StreamOptions(OpenAIModel):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class EngineRequest(OpenAIModel):
    """Fields every relayed route has: the model that routes it, whether its answer
    streams, and the end user (OpenAI's abuse-tracking field, also an affinity key)."""

    # vLLM fields of this route that only the gateway may set (beyond ENGINE_CONTROL_FIELDS).
    REFUSED: ClassVar[tuple[str, ...]] = ()

    model: str = Field(min_length=1)
    stream: bool = False  # null (which the OpenAI spec allows) is read as false
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("stream", mode="before")
    @classmethod
    def _null_stream(cls, value: object) -> object:
        return False if value is None else value


class SamplingRequest(EngineRequest):
    """Fields shared by both generation routes."""

    max_tokens: PositiveInt | None = None
    n: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None  # vLLM's range
    stop: str | list[str] | None = None


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


class EmbeddingRequest(EngineRequest):
    """``/v1/embeddings``: one vector per input. Deterministic, never streamed;
    ``dimensions`` is checked by the engine (vLLM refuses it, 400, for a model that
    cannot shorten its vectors)."""

    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: PositiveInt | None = None

    @field_validator("stream")
    @classmethod
    def _not_streamed(cls, value: bool) -> bool:
        if value:
            raise ValueError("embeddings are not streamed")
        return value

    @model_validator(mode="after")
    def _no_chat_messages(self) -> EmbeddingRequest:
        # vLLM also embeds chat conversations sent as "messages" (not OpenAI's API): a
        # text the gateway would neither estimate nor redact.
        if (self.model_extra or {}).get("messages") is not None:
            raise ValueError("'messages' is not supported on /v1/embeddings; send 'input'")
        return self

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        if value == "" or value == [] or (isinstance(value, list) and [] in value):
            raise ValueError("an input may not be empty")
        return value


class ResponsesRequest(EngineRequest):
    """``/v1/responses``: OpenAI's Responses API. Portico keeps the responses itself
    (``gateway.responses``), so the engine is stateless: a follow-up's
    ``previous_response_id`` is resolved by the gateway into the conversation it names.
    Not supported: ``background`` (a response is always answered on its own request)."""

    # request_id becomes the engine's request id and the response's id: the gateway
    # names responses. previous_input_messages is history the gateway neither sees as
    # a conversation nor redacts.
    REFUSED: ClassVar[tuple[str, ...]] = ("request_id", "previous_input_messages")

    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: PositiveInt | None = None
    previous_response_id: str | None = Field(None, min_length=1, max_length=256)
    store: bool | None = None  # null or absent: stored, as OpenAI's default
    background: bool | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stop: str | list[str] | None = None  # vLLM's extension, capped as on the other routes

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        if value == "" or value == []:
            raise ValueError("the input may not be empty")
        return value

    @field_validator("background")
    @classmethod
    def _not_background(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("background responses are not supported by this gateway")
        return value

    @property
    def stored(self) -> bool:
        return self.store is not False


# The request of every route the gateway relays to an engine.
APIRequest = CompletionRequest | ChatCompletionRequest | EmbeddingRequest | ResponsesRequest

# A streamed event's usage member, with its comma, as vLLM writes it (compact JSON,
# one nesting level: *_tokens_details). The relay and the cache's recorder both cut
# it out without parsing the event.
USAGE_MEMBER = re.compile(rb',"usage":(?:null|\{(?:[^{}]|\{[^{}]*\})*\})')

_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "literal"})


def _is_type_tag(part: str | int) -> bool:
    """pydantic puts union member names ('str', 'list[int]') into error locations;
    clients want the field path only (``stop``, ``messages.0.content``)."""
    return isinstance(part, str) and (part.lower() in _TYPE_TAGS or "[" in part or "-" in part)


def parse(model: type[APIRequest], body: bytes) -> APIRequest:
    """Validate a request body; the first problem becomes a 400 naming its field."""
    try:
        request = model.model_validate_json(body)
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
    extra = request.model_extra or {}
    for name in ENGINE_CONTROL_FIELDS + request.REFUSED:
        if extra.get(name) is not None:
            raise InvalidRequest(
                f"'{name}' may not be set by clients of this gateway.",
                param=name,
                code="unsupported_parameter",
            )
    return request


def batch_size(prompt: str | list[str] | list[int] | list[list[int]]) -> int:
    """How many prompts a completions request (or inputs an embeddings request) holds:
    one token array is one prompt."""
    if isinstance(prompt, str) or not prompt or isinstance(prompt[0], int):
        return 1
    return len(prompt)


def prompt_count(request: APIRequest) -> int:
    """How many prompts the engine reads for ``request``, each within the context."""
    if isinstance(request, CompletionRequest):
        return batch_size(request.prompt)
    if isinstance(request, EmbeddingRequest):
        return batch_size(request.input)
    return 1


def output_limit(request: APIRequest) -> int | None:
    """The completion tokens per choice the engine will allow (vLLM's rule: a chat
    request's max_completion_tokens wins over its max_tokens); None when unset, and
    for embeddings, which generate nothing."""
    if isinstance(request, EmbeddingRequest):
        return None
    if isinstance(request, ResponsesRequest):
        return request.max_output_tokens
    if isinstance(request, ChatCompletionRequest) and request.max_completion_tokens:
        return request.max_completion_tokens
    return request.max_tokens


def completion_allowance(request: APIRequest, default: int) -> int:
    """Completion tokens the request may generate: per choice, per prompt of a batch."""
    if isinstance(request, EmbeddingRequest):
        return 0
    limit = output_limit(request)
    if isinstance(request, ResponsesRequest):
        return limit or default  # one answer, no n
    choices = request.n or 1
    if isinstance(request, CompletionRequest):
        if request.best_of:
            choices = max(choices, request.best_of)
        choices *= batch_size(request.prompt)
    return (limit or default) * choices


def with_fields(body: bytes, fields: dict[str, Any]) -> bytes:
    """A validated JSON object ``body`` with ``fields`` appended as members. Parsers
    keep the last of duplicate names (Python's json, pydantic), so these win over the
    client's own. Appending costs one copy of the body, not a parse and a re-dump."""
    if not fields:
        return body
    head = body.rstrip()
    if not head.endswith(b"}"):
        raise ValueError("not a JSON object")
    members = json.dumps(fields, separators=(",", ":"))[1:]  # '"a":1}'
    opened = head[:-1].rstrip()
    return opened + (members.encode() if opened.endswith(b"{") else b"," + members.encode())
