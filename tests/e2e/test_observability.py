"""Metrics and logs after real traffic through the real engine: every family is
there with sane values, and no secret or prompt leaks into either."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import LOG_DIR, MODEL, Stack
from tests.gateway.processes import gateway_env, gateways

pytestmark = pytest.mark.e2e

CANARY_KEY = "pk-canary-secret-5b1e0c7d9a"
CANARY_PROMPT = "canary-prompt-f00dfeed"


@pytest.fixture(scope="module")
def observed(stack: Stack) -> Iterator[tuple[str, Path]]:
    """A gateway of its own (so its counters hold only this module's traffic)."""
    log_dir = LOG_DIR / "observability"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = gateway_env(PORTICO_ENGINE_URL=stack.engine_url, PORTICO_API_KEYS=CANARY_KEY)
    with gateways(1, env, log_dir) as urls:
        yield urls[0], log_dir / "gateway-0.log"


def _value(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(selector)}\}})? ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name}{{{selector}}} missing"
    return float(match.group(1))


def test_metrics_after_real_traffic_are_complete_and_consistent(
    observed: tuple[str, Path],
) -> None:
    url, log_path = observed
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=CANARY_KEY, max_retries=0)
    messages = [{"role": "user", "content": f"Say hello. {CANARY_PROMPT}"}]
    reply = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, temperature=0.7, max_tokens=12
    )
    assert float(reply.headers["x-portico-overhead-ms"]) >= 0
    assert reply.headers["server-timing"].startswith("gateway;dur=")
    usage = reply.parse().usage
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=messages, temperature=0.7, max_tokens=12, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    stream_usage = chunks[-1].usage
    assert usage is not None
    assert stream_usage is not None
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key=CANARY_KEY + "x", max_retries=0).models.list()

    text = httpx.get(f"{url}/metrics").text
    route = "/v1/chat/completions"
    assert _value(text, "portico_requests_total", route=route, model=MODEL, status_class="2xx") == 2
    prompt_total = _value(text, "portico_prompt_tokens_total", model=MODEL)
    completion_total = _value(text, "portico_completion_tokens_total", model=MODEL)
    assert prompt_total == usage.prompt_tokens + stream_usage.prompt_tokens
    assert completion_total == usage.completion_tokens + stream_usage.completion_tokens
    # One stream: its TTFT is no longer than its whole duration.
    assert _value(text, "portico_time_to_first_token_seconds_count", model=MODEL) == 1
    ttft = _value(text, "portico_time_to_first_token_seconds_sum", model=MODEL)
    duration = _value(text, "portico_request_duration_seconds_sum", route=route)
    assert 0 < ttft <= duration
    assert _value(text, "portico_time_per_output_token_seconds_count", model=MODEL) == 1
    overhead = _value(text, "portico_gateway_overhead_seconds_sum", route=route)
    assert 0 < overhead < duration
    assert _value(text, "portico_upstream_requests_total", engine=_engine(text), outcome="ok") == 2
    assert _value(text, "portico_engine_up", engine=_engine(text)) == 1
    assert _value(text, "portico_auth_failures_total") == 1
    assert _value(text, "portico_process_resident_memory_bytes") > 10_000_000
    assert _value(text, "portico_cache_requests_total", result="bypass") == 2

    logs = log_path.read_text()
    for canary in (CANARY_KEY, CANARY_PROMPT):
        assert canary not in text
        assert canary not in logs
    assert '"ttft_ms"' in logs
    assert '"principal": "static_' in logs
    client.close()


def _engine(text: str) -> str:
    match = re.search(r'portico_engine_up\{engine="([^"]+)"\}', text)
    assert match
    return match.group(1)


def _exported(scrape: str) -> set[str]:
    """Series names a scrape can answer: sample names plus the suffixes of each family."""
    names = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", scrape, re.MULTILINE))
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", scrape, re.MULTILINE):
        names.add(family)
        if kind == "counter":
            names.add(family + "_total")
        if kind == "histogram":
            names.update(family + s for s in ("_bucket", "_sum", "_count"))
    return names - {"#"}


def test_every_dashboard_query_names_an_exported_metric(
    stack: Stack, observed: tuple[str, Path]
) -> None:
    import json

    dashboard = json.loads(
        (Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text()
    )
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"([a-z_:]+)\{", target["expr"])
    }
    exported = _exported(httpx.get(f"{observed[0]}/metrics").text)
    exported |= _exported(httpx.get(f"{stack.engine_url}/metrics").text)
    assert used <= exported, used - exported


def test_version_lists_the_real_engines_vllm_version_and_no_address(
    observed: tuple[str, Path], stack: Stack
) -> None:
    answer = httpx.get(f"{observed[0]}/version", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["engines"] == [{"name": "engine-0", "vllm_version": "0.32.0"}]
    assert stack.engine_url.split("//")[1] not in answer.text
