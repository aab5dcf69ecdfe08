"""The generation service used without HTTP, as a batch worker will use it: a Call in,
a Reply out, and nothing held once the reply is consumed or abandoned."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from gateway.app import create_app
from gateway.auth import Principal
from gateway.exchange import Call, Reply
from gateway.resources import Resources
from gateway.settings import GatewaySettings
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.servers import serving

OWNER = Principal(id="key_batch_owner", kind="key", rpm=100, tpm=100_000)


@pytest.fixture
def engine() -> Iterator[tuple[FakeEngine, str]]:
    fake = FakeEngine()
    with serving(fake.app) as url:
        yield fake, url


async def _service_call(url: str, prompt: str, stream: bool, read_events: int | None) -> dict:
    app = create_app(GatewaySettings(engine_url=url, api_keys=["unused-key"]))
    async with app.router.lifespan_context(app):
        resources: Resources = app.state.resources
        body = json.dumps({"model": MODEL, "prompt": prompt, "stream": stream}).encode()
        request = await resources.generation.validate("/v1/completions", body, OWNER)
        call = Call(route="/v1/completions", body=body, request=request, principal=OWNER,
                    request_id="batch-1-line-7")  # fmt: skip
        reply = await resources.generation.respond(call)
        events = await _consume(reply, read_events)
        usage = await resources.limiter.usage(OWNER.id)
        return {"reply": reply, "events": events, "usage": usage,
                "outstanding": resources.pool.outstanding()}  # fmt: skip


async def _consume(reply: Reply, read_events: int | None) -> list[bytes]:
    if reply.stream is None:
        return []
    events: list[bytes] = []
    assert reply.close is not None
    try:
        async for chunk in reply.stream:
            events.append(chunk)
            if read_events is not None and len(events) >= read_events:
                break  # the consumer stops early, as a cancelled batch would
    finally:
        await reply.close()
    return events


def test_a_non_stream_call_returns_the_engines_body_and_settles_its_usage(
    engine: tuple[FakeEngine, str],
) -> None:
    result = asyncio.run(_service_call(engine[1], "hello", stream=False, read_events=None))
    reply: Reply = result["reply"]
    assert reply.status_code == 200
    assert json.loads(reply.body)["choices"][0]["text"] == "ok"
    assert reply.headers["x-cache"] == "bypass"
    assert result["outstanding"] == 0
    assert result["usage"] == json.loads(reply.body)["usage"]["total_tokens"]  # settled


def test_a_stream_consumed_in_full_ends_with_done_and_frees_its_slot(
    engine: tuple[FakeEngine, str],
) -> None:
    result = asyncio.run(_service_call(engine[1], "hello", stream=True, read_events=None))
    assert result["reply"].media_type.startswith("text/event-stream")
    assert b"".join(result["events"]).endswith(b"data: [DONE]\n\n")
    assert result["outstanding"] == 0
    assert result["usage"] > 0


def test_a_stream_abandoned_after_one_event_closes_the_engines_stream_and_frees_its_slot(
    engine: tuple[FakeEngine, str],
) -> None:
    fake, url = engine
    result = asyncio.run(_service_call(url, "endless", stream=True, read_events=1))
    assert result["outstanding"] == 0
    assert b"[DONE]" not in b"".join(result["events"])
    deadline = time.monotonic() + 5
    while not fake.stream_closed.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.stream_closed.is_set()  # the engine saw its stream closed: it stops generating
