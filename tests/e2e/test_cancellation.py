"""A client that walks away mid-stream stops the engine's work too."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import MODEL, Stack

pytestmark = pytest.mark.e2e


def _wait_for(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_disconnect_mid_stream_aborts_the_engine_request(stack: Stack) -> None:
    tokens_before = stack.engine_metric("vllm:generation_tokens_total")
    body = {
        "model": MODEL,
        "prompt": "Write a very long story about a lighthouse keeper.",
        "max_tokens": 2000,
        "temperature": 0,
        "ignore_eos": True,  # vLLM extra: unless aborted, it generates all 2000 tokens
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{stack.base_url}/completions", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        chunks = r.iter_bytes()
        next(chunks)
        assert _wait_for(lambda: stack.engine_metric("vllm:num_requests_running") >= 1, 10)
    # Leaving the block closed the connection mid-stream.
    assert _wait_for(lambda: stack.engine_metric("vllm:num_requests_running") == 0, 10)
    generated = stack.engine_metric("vllm:generation_tokens_total") - tokens_before
    time.sleep(1)
    assert stack.engine_metric("vllm:generation_tokens_total") - tokens_before == generated
    assert generated < 1000, "the engine kept generating after the client left"
