"""``portico loadtest``'s pure parts, and its driver over an in-process httpx transport
(the e2e test runs it against the real engine and gateway)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.errors import EngineError
from loadtest import report as loadtest_report
from loadtest import sweep as loadtest
from loadtest.errors import LoadTestError
from loadtest.sweep import Chunk, Level, LoadTestConfig, Sample
from portico import loadtest_command
from portico.cli import build_parser, main
from portico.settings import CliSettings


def _config(**overrides: Any) -> LoadTestConfig:
    values: dict[str, Any] = {
        "base_url": "http://deploy.test/v1",
        "model": "m",
        "api_key": "sk-test",
        "concurrency": (1, 2),
        "requests": 4,
        "max_tokens": 8,
        "prompt": "hello",
        "api": "chat",
        "timeout_s": 5.0,
    }
    return LoadTestConfig(**{**values, **overrides})


def _level(concurrency: int, tokens_per_s: float, ttft_p99: float | None, **kw: Any) -> Level:
    values: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": 8,
        "ok": 8,
        "errors": {},
        "wall_s": 1.0,
        "requests_per_s": 8.0,
        "tokens_per_s": tokens_per_s,
        "completion_tokens": int(tokens_per_s),
        "ttft_ms": {"p50": ttft_p99, "p90": ttft_p99, "p99": ttft_p99},
        "latency_ms": {"p50": 100.0, "p90": 100.0, "p99": 100.0},
        "request_tokens_per_s_p50": 10.0,
        "client_cpu_s": 0.1,
        "without_usage": 0,
        "cache_hits": 0,
    }
    return Level(**{**values, **kw})


# --- percentiles ---------------------------------------------------------------------


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert loadtest.percentile(values, 50) == 3.0
    assert loadtest.percentile(values, 0) == 1.0
    assert loadtest.percentile(values, 100) == 5.0
    assert loadtest.percentile(values, 90) == pytest.approx(4.6)
    assert loadtest.percentile([1.0, 2.0], 99) == pytest.approx(1.99)


def test_percentile_of_one_value_is_that_value_and_of_none_is_none() -> None:
    assert loadtest.percentile([7.0], 99) == 7.0
    assert loadtest.percentile([], 50) is None


# --- SSE parsing ---------------------------------------------------------------------


def test_chat_delta_content_is_the_chunk_text() -> None:
    line = 'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}'
    assert loadtest.parse_sse_line(line) == Chunk(text="Hel")


def test_completion_text_is_the_chunk_text() -> None:
    line = 'data: {"choices":[{"index":0,"text":"lo","finish_reason":null}]}'
    assert loadtest.parse_sse_line(line) == Chunk(text="lo")


def test_usage_chunk_carries_completion_tokens_and_no_text() -> None:
    line = (
        'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":8,"total_tokens":17}}'
    )
    assert loadtest.parse_sse_line(line) == Chunk(completion_tokens=8)


def test_role_only_delta_is_not_content() -> None:
    line = 'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}'
    assert loadtest.parse_sse_line(line) == Chunk()


def test_done_error_events_and_other_lines() -> None:
    assert loadtest.parse_sse_line("data: [DONE]") == Chunk(done=True)
    error = loadtest.parse_sse_line('data: {"error":{"message":"engine died","code":500}}')
    assert error == Chunk(error="engine died")
    assert loadtest.parse_sse_line("data: {not json") is not None
    assert loadtest.parse_sse_line("data: {not json").error  # type: ignore[union-attr]
    for other in ("", ": keep-alive", "event: message"):
        assert loadtest.parse_sse_line(other) is None


def test_sample_takes_ttft_from_the_first_content_chunk_and_tokens_from_usage() -> None:
    sample = Sample()
    sample.feed(Chunk(), 0.05)  # the role delta: not a token yet
    sample.feed(Chunk(text="a"), 0.2)
    sample.feed(Chunk(text="b"), 0.3)
    sample.feed(Chunk(completion_tokens=5), 0.4)
    sample.feed(Chunk(done=True), 0.4)
    sample.finish(0.41)
    assert (sample.ttft_s, sample.latency_s, sample.completion_tokens) == (0.2, 0.41, 5)
    assert sample.usage
    assert sample.error is None


def test_stream_without_usage_counts_chunks_and_without_done_is_an_error() -> None:
    sample = Sample()
    sample.feed(Chunk(text="a"), 0.1)
    sample.feed(Chunk(text="b"), 0.2)
    sample.finish(0.3)
    assert sample.completion_tokens == 2
    assert not sample.usage
    assert sample.error == "stream error"
    assert "[DONE]" in sample.detail


# --- levels and the sizing answer ----------------------------------------------------


def test_summarize_rates_count_only_successful_requests() -> None:
    good = [Sample(latency_s=1.0, ttft_s=0.1, completion_tokens=10, usage=True) for _ in range(3)]
    bad = Sample(latency_s=0.01, status=429, error="429")
    level = loadtest.summarize(2, [*good, bad], wall_s=2.0, cpu_s=0.1)
    assert (level.requests, level.ok, level.errors) == (4, 3, {"429": 1})
    assert level.tokens_per_s == 15.0
    assert level.requests_per_s == 1.5
    assert level.ttft_ms["p99"] == pytest.approx(100.0)
    assert level.request_tokens_per_s_p50 == 10.0
    assert len(level.samples) == 4
    assert "_chunks" not in level.samples[0]


def test_best_is_the_most_tokens_per_second() -> None:
    results = [_level(1, 10, 200), _level(4, 35, 400), _level(16, 30, 900)]
    assert loadtest.choose(results, None) == loadtest.Verdict(results[1], None)


def test_slo_answer_is_the_highest_level_under_the_target_without_errors() -> None:
    results = [
        _level(1, 10, 200),
        _level(4, 35, 400),
        _level(8, 40, 450, errors={"429": 1}),  # fast but failing: meets no target
        _level(16, 30, 900),
    ]
    assert loadtest.choose(results, 500).within_slo is results[1]
    assert loadtest.choose(results, 1000).within_slo is results[3]
    assert loadtest.choose(results, 100).within_slo is None


def test_conclusions_state_the_sizing_answer() -> None:
    results = [_level(1, 10, 200), _level(4, 35, 400)]
    lines = loadtest_report.conclusions(results, _config(concurrency=(1, 4), ttft_slo_ms=300))
    assert lines[0].startswith("Most tokens/s: concurrency 4")
    assert "TTFT p99 <= 300 ms up to concurrency 1" in lines[1]


# --- arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h:8080", "http://h:8080/v1"),
        ("http://h:8080/", "http://h:8080/v1"),
        ("http://h:8080/v1/", "http://h:8080/v1"),
        ("https://h/openai/v1", "https://h/openai/v1"),
    ],
)
def test_base_url_takes_the_openai_base_or_a_bare_host(url: str, expected: str) -> None:
    assert loadtest.normalize_base_url(url) == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"concurrency": (0, 2)}, "--concurrency"),
        ({"requests": 1, "concurrency": (1, 4)}, "would never run"),
        ({"max_tokens": 0}, "--max-tokens"),
        ({"timeout_s": 0.0}, "--timeout"),
        ({"ttft_slo_ms": -1.0}, "--ttft-slo-ms"),
        ({"prompt": "  "}, "prompt"),
    ],
)
def test_invalid_arguments_are_refused_with_the_flag_named(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(LoadTestError, match=message):
        _config(**overrides)


def test_the_load_test_error_is_its_own_not_an_engine_error() -> None:
    assert not issubclass(LoadTestError, EngineError)
    assert LoadTestError("x").exit_code == 2


def test_default_requests_grow_with_concurrency() -> None:
    config = _config(requests=None, concurrency=(1, 16))
    assert [config.requests_at(c) for c in config.concurrency] == [8, 32]


def test_loadtest_flags_parse() -> None:
    args = build_parser().parse_args(
        ["loadtest", "--base-url", "http://h/v1", "--model", "m", "--concurrency", "4", "1", "4",
         "--completions", "--ttft-slo-ms", "500"]
    )  # fmt: skip
    assert (args.api, args.ttft_slo_ms, loadtest.levels(args.concurrency)) == (
        "completions",
        500.0,
        (1, 4),
    )
    assert build_parser().parse_args(["loadtest", "--base-url", "u", "--model", "m"]).api == "chat"


def test_the_key_comes_from_the_flag_then_openai_api_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["loadtest", "--base-url", "http://h:8080", "--model", "m"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    settings = CliSettings()
    from_env = loadtest_command.config_from(build_parser().parse_args(argv), settings)
    assert (from_env.api_key, from_env.base_url) == ("sk-from-env", "http://h:8080/v1")
    flagged = build_parser().parse_args([*argv, "--api-key", "sk-flag"])
    assert loadtest_command.config_from(flagged, settings).api_key == "sk-flag"
    monkeypatch.delenv("OPENAI_API_KEY")
    unset = loadtest_command.config_from(build_parser().parse_args(argv), CliSettings())
    assert unset.api_key is None


def test_bad_arguments_exit_non_zero_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["loadtest", "--base-url", "localhost:8000", "--model", "m"])
    assert code != 0
    err = capsys.readouterr().err
    assert err.startswith("portico: error: --base-url")
    assert err.count("\n") == 1


# --- the driver, over an in-process transport ----------------------------------------


def _stream(tokens: int) -> bytes:
    events = [{"choices": [{"delta": {"role": "assistant", "content": ""}}]}]
    events += [{"choices": [{"delta": {"content": f"t{i}"}}]} for i in range(tokens)]
    events.append({"choices": [], "usage": {"completion_tokens": tokens}})
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def test_sweep_measures_every_level_and_sends_unique_uncached_requests() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == "http://deploy.test/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer sk-test"
        assert "no-cache" in request.headers["cache-control"]
        bodies.append(json.loads(request.content))
        return httpx.Response(200, content=_stream(3), headers={"x-cache": "bypass"})

    results = asyncio.run(loadtest.sweep(_config(), transport=httpx.MockTransport(handler)))
    assert [(r.concurrency, r.ok, r.error_count) for r in results] == [(1, 4, 0), (2, 4, 0)]
    assert all(r.completion_tokens == 12 and r.tokens_per_s > 0 for r in results)
    assert len(bodies) == 9  # the unmeasured first request, then 4 per level
    prompts = {b["messages"][0]["content"] for b in bodies}
    assert len(prompts) == 9
    assert bodies[0]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"error": {"message": "Invalid API key"}}, "401 (authentication failed"),
        (404, {"error": {"message": "The model `x` does not exist."}}, "check --model"),
    ],
)
def test_a_refused_first_request_is_one_clear_error(
    status: int, body: dict[str, Any], expected: str
) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(status, json=body))
    with pytest.raises(LoadTestError, match=r"answered") as caught:
        asyncio.run(loadtest.sweep(_config(), transport=transport))
    assert expected in str(caught.value)
    assert body["error"]["message"] in str(caught.value)


def test_connection_refused_is_one_clear_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(LoadTestError, match=re.escape("cannot reach POST http://deploy.test/v1")):
        asyncio.run(loadtest.sweep(_config(), transport=httpx.MockTransport(refuse)))


def test_reports_are_written(tmp_path: Path) -> None:
    config = _config(concurrency=(1, 4), ttft_slo_ms=300)
    results = [_level(1, 10, 200), _level(4, 35, 400)]
    notes = loadtest_report.write_reports(results, config, tmp_path)
    report = json.loads((tmp_path / "loadtest.json").read_text())
    assert report["best_tokens_per_s_concurrency"] == 4
    assert report["within_ttft_slo_concurrency"] == 1
    assert "api_key" not in report["config"]
    assert "| 4 | 8 | 0 |" in (tmp_path / "loadtest.md").read_text()
    assert (tmp_path / "loadtest.png").read_bytes().startswith(b"\x89PNG")
    assert notes == [f"Wrote loadtest.json, loadtest.md, loadtest.png to {tmp_path}"]


def test_failed_requests_are_counted_by_status_reported_and_exit_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sent = itertools.count()

    def handler(request: httpx.Request) -> httpx.Response:
        if next(sent) % 2 == 1:  # the first (checking) request passes, then every other
            return httpx.Response(429, json={"error": {"message": "slow down"}})
        return httpx.Response(200, content=_stream(2))

    code = loadtest_report.run(_config(), tmp_path, transport=httpx.MockTransport(handler))
    assert code == 1
    levels = json.loads((tmp_path / "loadtest.json").read_text())["levels"]
    assert [level["errors"] for level in levels] == [{"429": 2}, {"429": 2}]
    assert all(level["tokens_per_s"] > 0 for level in levels)
    assert "4 requests failed" in capsys.readouterr().err
    assert "Concurrency 2: 429, for example: slow down" in (tmp_path / "loadtest.md").read_text()
