"""Replaying cached answers, against answers recorded from the real vLLM engine
with the hermes tool parser (tests/gateway/data/README.md): a replay is the
recorded answer, field for field, but for the fields a fresh answer renews."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gateway.replay import Delivery, StreamRecorder, entry_from_body, replay
from tests.gateway.recorded_answers import (
    COMPLETE,
    events,
    load,
    normalized,
    sdk_body,
    sdk_stream,
    tool_calls,
)

LIMIT = 1 << 20
EVERYTHING = {"usage": True, "running_usage": True}


def _delivery(chat: bool = True, **asked: bool) -> Delivery:
    return Delivery(request_id="req-1", id_prefix="chatcmpl-" if chat else "cmpl-", **asked)


def _recorded(stream: list[str], max_bytes: int = LIMIT) -> dict[str, Any] | None:
    recorder = StreamRecorder(max_bytes)
    for data in stream:
        recorder.add(data.encode())
    return recorder.entry()


def _is_chat(answer: dict[str, Any]) -> bool:
    return bool(answer["route"].endswith("chat/completions"))


@pytest.mark.parametrize("name", COMPLETE)
def test_body_replay_is_the_recorded_body(name: str) -> None:
    answer = load(name)
    entry = entry_from_body(answer["body"].encode())
    assert entry is not None
    replayed = json.loads(replay(entry, _delivery(_is_chat(answer))))
    recorded = json.loads(answer["body"])
    assert normalized(replayed) == normalized(recorded)
    assert sdk_body(answer["route"], replayed) == sdk_body(answer["route"], recorded)


@pytest.mark.parametrize("name", COMPLETE)
def test_stream_replay_is_the_recorded_stream(name: str) -> None:
    answer = load(name)
    entry = _recorded(answer["stream"])
    assert entry is not None
    replayed = events(replay(entry, _delivery(_is_chat(answer), **EVERYTHING)).decode())
    assert normalized(replayed) == normalized(answer["stream"])
    assert sdk_stream(answer["route"], replayed) == sdk_stream(answer["route"], answer["stream"])
    assert tool_calls(replayed) != [] or tool_calls(answer["stream"]) == []


@pytest.mark.parametrize("name", COMPLETE)
def test_stream_replay_without_running_usage_is_what_vllm_sends_without_it(name: str) -> None:
    """The recording made with continuous_usage_stats, replayed to a client that asked
    include_usage alone, equals vLLM's own answer to that client."""
    answer = load(name)
    entry = _recorded(answer["stream"])
    assert entry is not None
    replayed = events(replay(entry, _delivery(_is_chat(answer), usage=True)).decode())
    assert normalized(replayed) == normalized(answer["stream_usage_only"])


def test_stream_replay_without_usage_has_no_usage_anywhere() -> None:
    answer = load("recorded_chat_tool_required")
    entry = _recorded(answer["stream"])
    assert entry is not None
    replayed = events(replay(entry, _delivery()).decode())
    assert replayed[-1] == "[DONE]"
    assert all("usage" not in json.loads(data) for data in replayed[:-1])
    assert normalized(replayed) == [*normalized(answer["stream_usage_only"][:-2]), "[DONE]"]


def test_a_streamed_tool_call_replays_with_its_deltas() -> None:
    """The finding: a replayed stream ended with finish_reason tool_calls and no call."""
    answer = load("recorded_chat_tool_required")
    entry = _recorded(answer["stream"])
    assert entry is not None
    replayed = events(replay(entry, _delivery()).decode())
    calls = tool_calls(replayed)
    assert [(c, i, name) for c, i, _, name, _ in calls] == [
        (0, 0, "get_weather"),
        (1, 0, "get_weather"),
    ]
    assert [args for *_, args in calls] == [args for *_, args in tool_calls(answer["stream"])]
    snapshot = sdk_stream(answer["route"], replayed)
    assert snapshot.choices[0].finish_reason == "tool_calls"
    assert snapshot.choices[0].message.tool_calls  # what the OpenAI SDK hands the agent


@pytest.mark.parametrize("shape", ["body", "stream"])
def test_ids_are_fresh_in_each_replay_and_consistent_within_one(shape: str) -> None:
    answer = load("recorded_chat_tool_required")
    if shape == "body":
        entry = entry_from_body(answer["body"].encode())
    else:
        entry = _recorded(answer["stream"])
    assert entry is not None
    recorded_ids = _ids(answer[shape] if shape == "stream" else [answer["body"]])
    first, second = (_ids(_answer(entry, shape)) for _ in range(2))
    answer_ids, tool_ids = first
    assert len(answer_ids) == 1
    assert answer_ids[0].startswith("chatcmpl-req-1-")
    assert len(tool_ids) == len(recorded_ids[1]) == {"body": 1, "stream": 2}[shape]
    assert all(new.startswith("chatcmpl-tool-") and len(new) == 30 for new in tool_ids)
    assert not set(tool_ids) & set(recorded_ids[1])
    assert not set(tool_ids) & set(second[1])  # every replay draws new ones
    assert answer_ids != second[0]


def _answer(entry: dict[str, Any], shape: str) -> list[str]:
    text = replay(entry, _delivery(**EVERYTHING)).decode()
    return events(text) if shape == "stream" else [text]


def _ids(objects: list[str]) -> tuple[list[str], list[str]]:
    """(distinct answer ids, distinct tool-call ids) in order of appearance."""
    answers: dict[str, None] = {}
    tools: dict[str, None] = {}
    for data in objects:
        if data == "[DONE]":
            continue
        payload = json.loads(data)
        answers[payload["id"]] = None
        for choice in payload["choices"]:
            part = choice.get("delta") or choice.get("message") or {}
            for call in part.get("tool_calls") or []:
                if call.get("id"):
                    tools[call["id"]] = None
    return list(answers), list(tools)


def test_created_is_fresh() -> None:
    answer = load("recorded_completion")
    entry = entry_from_body(answer["body"].encode())
    assert entry is not None
    created = json.loads(replay(entry, _delivery(chat=False)))["created"]
    assert abs(created - time.time()) < 5
    assert created != json.loads(answer["body"])["created"]


def test_a_stream_with_an_error_event_is_not_recorded() -> None:
    """vLLM 0.32 failing half-way (recorded): an error event, then [DONE]."""
    stream = load("recorded_completion_stream_error")["stream"]
    assert any('"error"' in data for data in stream)
    assert stream[-1] == "[DONE]"
    assert _recorded(stream) is None


@pytest.mark.parametrize(
    "cut",
    [
        lambda s: s[:-1],  # no [DONE]
        lambda s: [d for d in s if '"finish_reason":"tool_calls"' not in d],  # choice 0 unfinished
        lambda s: [*s, s[0]],  # an event after [DONE]
        lambda s: [s[0][:-5], *s[1:]],  # a truncated event
        lambda s: [d.replace('"finish_reason":"length"', '"finish_reason":"abort"') for d in s],
    ],
    ids=["no-done", "unfinished-choice", "after-done", "truncated-event", "aborted-choice"],
)
def test_incomplete_streams_are_not_recorded(cut: Any) -> None:
    assert _recorded(cut(load("recorded_chat_tool_required")["stream"])) is None


def test_a_stream_larger_than_an_entry_may_be_is_not_recorded() -> None:
    stream = load("recorded_chat_text")["stream"]
    size = sum(len(f"data: {data}\n\n".encode()) for data in stream if data != "[DONE]")
    assert _recorded(stream, max_bytes=size) is not None
    assert _recorded(stream, max_bytes=size - 1) is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"error": {"message": "x"}}',
        b'{"id": "x", "choices": []}',
        b'{"id": "x", "choices": [{"index": 0, "text": "a", "finish_reason": null}]}',
        b'{"id": "x", "choices": [{"index": 0, "text": "a", "finish_reason": "abort"}]}',
    ],
    ids=["not-json", "error", "no-choice", "unfinished", "aborted"],
)
def test_incomplete_bodies_are_not_recorded(body: bytes) -> None:
    assert entry_from_body(body) is None
