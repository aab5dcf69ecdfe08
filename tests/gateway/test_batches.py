"""``/v1/batches`` through the real app, the real Redis and the real OpenAI SDK, fake
engines: a batch run to ``completed`` with every custom_id answered once, line-numbered
validation failures, cancel mid-run keeping what finished, tenant isolation, the
in-memory store without Redis, and two gateway processes sharing Redis where one is
SIGKILLed mid-batch and the other finishes the batch with nothing lost or doubled."""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import free_port
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.processes import Child, FakeEngineProcess, gateway_env
from tests.gateway.servers import serving

ADMIN = "admin-token-for-batch-tests-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
REDIS_URL = "redis://127.0.0.1:6379/0"
STATIC_KEY = "pk-batches-static-0123456789"
FAST = {"poll_interval_s": 0.05, "lease_s": 2.0, "retry_s": 0.2, "concurrency": 2}


def chat_line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": custom_id}], **body},
    }  # fmt: skip


def completion_line(custom_id: str, prompt: str = "slow-ok") -> dict[str, Any]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 4}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/completions", "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in lines)


class Stack:
    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.client = httpx.Client(base_url=url, timeout=30)

    def key(self, **spec: Any) -> str:
        created = self.client.post("/admin/keys", json={"name": "b", **spec}, headers=ADMIN_AUTH)
        assert created.status_code == 201, created.text
        return str(created.json()["key"])

    def sdk(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)


def submit(sdk: openai.OpenAI, tmp: Path, lines: list[dict[str, Any]], endpoint: str) -> Any:
    path = tmp / f"{uuid.uuid4().hex[:8]}.jsonl"
    path.write_bytes(jsonl(lines))
    with path.open("rb") as handle:
        uploaded = sdk.files.create(file=handle, purpose="batch")
    return sdk.batches.create(
        input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h",  # type: ignore[arg-type]
        metadata={"job": "nightly"},
    )  # fmt: skip


def wait_for(sdk: openai.OpenAI, batch_id: str, statuses: set[str], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch stuck in {batch.status}: {batch}"
        time.sleep(0.1)


def lines_of(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in sdk.files.content(file_id).text.splitlines()]


def _clean(prefix: str) -> None:
    store = redis.Redis.from_url(REDIS_URL)
    keys = list(store.scan_iter(f"{prefix}:*"))
    if keys:
        store.delete(*keys)
    store.close()


@contextmanager
def _stack(tmp: Path, use_redis: bool = True, **batches: Any) -> Iterator[Stack]:
    prefix = f"test-batches-{uuid.uuid4().hex[:10]}"
    with ExitStack() as stack:
        engine = stack.enter_context(serving(FakeEngine().app))
        where: dict[str, Any] = (
            {"redis_url": REDIS_URL, "redis": {"prefix": prefix}}
            if use_redis
            else {"api_keys": [STATIC_KEY]}
        )
        config = GatewaySettings(
            engine_url=engine, admin_token=ADMIN, batches={**FAST, **batches}, **where
        )
        url = stack.enter_context(serving(create_app(config)))
        gateway = Stack(url, tmp)
        stack.callback(gateway.client.close)
        yield gateway
    _clean(prefix)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Stack]:
    with _stack(tmp_path) as stack:
        yield stack


def test_a_batch_runs_to_completed_with_every_custom_id_answered_once(gateway: Stack) -> None:
    sdk = gateway.sdk(gateway.key())
    ids = [f"req-{i}" for i in range(12)]
    lines = [completion_line(i, f"hello {i}") for i in ids]
    batch = submit(sdk, gateway.tmp, lines, "/v1/completions")
    assert batch.status == "in_progress"
    assert batch.request_counts is not None
    assert batch.request_counts.total == 12
    done = wait_for(sdk, batch.id, {"completed", "failed"})
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (12, 0)
    assert done.completed_at is not None
    assert done.metadata == {"job": "nightly"}
    output = lines_of(sdk, done.output_file_id)
    assert [o["custom_id"] for o in output] == ids  # once each, in input order
    for o in output:
        assert o["response"]["status_code"] == 200
        assert o["error"] is None
        assert o["response"]["body"]["object"] == "text_completion"
    assert done.error_file_id is None
    assert sdk.files.retrieve(done.output_file_id).purpose == "batch_output"
    with pytest.raises(openai.BadRequestError) as refused:  # an output is no input
        sdk.batches.create(
            input_file_id=done.output_file_id, endpoint="/v1/completions", completion_window="24h"
        )
    assert refused.value.code == "invalid_input_file"
    listed = sdk.batches.list()
    assert [b.id for b in listed.data] == [batch.id]
    metrics = gateway.client.get("/metrics").text
    assert 'portico_batch_lines_total{outcome="completed"} 12.0' in metrics
    assert 'portico_batches_finished_total{status="completed"} 1.0' in metrics
    assert f'portico_prompt_tokens_total{{model="{MODEL}"}} 60.0' in metrics  # 12 x 5


def test_an_answer_that_is_an_error_goes_to_the_error_file(gateway: Stack) -> None:
    sdk = gateway.sdk(gateway.key())
    lines = [completion_line("ok", "hello"), completion_line("bad", "error-500")]
    done = wait_for(sdk, submit(sdk, gateway.tmp, lines, "/v1/completions").id, {"completed"})
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    assert [o["custom_id"] for o in lines_of(sdk, done.output_file_id)] == ["ok"]
    [failed] = lines_of(sdk, done.error_file_id)
    assert failed["custom_id"] == "bad"
    assert failed["response"]["status_code"] == 500


def test_lines_the_request_path_refuses_fail_the_batch_with_their_line_numbers(
    gateway: Stack,
) -> None:
    sdk = gateway.sdk(gateway.key())
    lines = [
        chat_line("fine"),
        {**completion_line("wrong-url"), "custom_id": "wrong-url"},
        chat_line("bad-tokens", max_tokens=-1),
        chat_line("streamed", stream=True),
    ]
    batch = submit(sdk, gateway.tmp, lines, "/v1/chat/completions")
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors is not None
    assert batch.errors.data is not None
    found = {(e.line, e.code, e.param) for e in batch.errors.data}
    assert found == {
        (2, "mismatched_url", "url"),
        (3, "invalid_request", "max_tokens"),
        (4, "invalid_request", "body.stream"),
    }
    time.sleep(0.3)
    assert sdk.batches.retrieve(batch.id).status == "failed"  # nothing ran


def test_cancel_mid_run_stops_new_lines_and_keeps_finished_results(gateway: Stack) -> None:
    sdk = gateway.sdk(gateway.key())
    lines = [completion_line(f"c{i}") for i in range(40)]  # 0.5 s each, two at a time
    batch = submit(sdk, gateway.tmp, lines, "/v1/completions")
    deadline = time.monotonic() + 20
    while sdk.batches.retrieve(batch.id).request_counts.completed < 2:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status in {"cancelling", "cancelled"}
    done = wait_for(sdk, batch.id, {"cancelled"})
    assert done.cancelled_at is not None
    assert done.cancelling_at is not None
    output = lines_of(sdk, done.output_file_id)
    unrun = lines_of(sdk, done.error_file_id)
    assert 2 <= len(output) < 40
    assert all(o["response"]["status_code"] == 200 for o in output)
    assert all(u["error"]["code"] == "batch_cancelled" for u in unrun)
    assert sorted(o["custom_id"] for o in output + unrun) == sorted(f"c{i}" for i in range(40))
    counts = done.request_counts
    assert counts is not None
    assert counts.completed == len(output)
    assert counts.failed == len(unrun)


def test_another_tenant_can_neither_see_nor_cancel_a_batch(gateway: Stack) -> None:
    owner, other = gateway.sdk(gateway.key()), gateway.sdk(gateway.key())
    lines = [completion_line(f"t{i}") for i in range(8)]
    batch = submit(owner, gateway.tmp, lines, "/v1/completions")
    for attempt in (
        lambda: other.batches.retrieve(batch.id),
        lambda: other.batches.cancel(batch.id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert other.batches.list().data == []
    # Nor create a batch over the owner's input file.
    with pytest.raises(openai.NotFoundError):
        other.batches.create(
            input_file_id=batch.input_file_id, endpoint="/v1/completions", completion_window="24h"
        )
    done = wait_for(owner, batch.id, {"completed"})
    with pytest.raises(openai.NotFoundError):
        other.files.content(done.output_file_id)


def test_bad_create_requests_are_openai_400s(gateway: Stack) -> None:
    key = gateway.key()
    auth = {"Authorization": f"Bearer {key}"}
    for body in (
        {"input_file_id": "file-x", "endpoint": "/v1/responses", "completion_window": "24h"},
        {"input_file_id": "file-x", "endpoint": "/v1/completions", "completion_window": "1h"},
        {"input_file_id": "file-x", "endpoint": "/v1/completions", "completion_window": "24h",
         "metadata": {f"k{i}": "v" for i in range(17)}},
    ):  # fmt: skip
        answer = gateway.client.post("/v1/batches", json=body, headers=auth)
        assert answer.status_code == 400, answer.text
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    answer = gateway.client.get("/v1/batches/batch_nope", headers=auth)
    assert answer.status_code == 404


def test_a_revoked_key_stops_its_batch_lines(gateway: Stack) -> None:
    created = gateway.client.post("/admin/keys", json={"name": "r"}, headers=ADMIN_AUTH).json()
    sdk = gateway.sdk(created["key"])
    submit(sdk, gateway.tmp, [completion_line(f"r{i}") for i in range(30)], "/v1/completions")
    time.sleep(0.6)
    revoked = gateway.client.delete(f"/admin/keys/{created['id']}", headers=ADMIN_AUTH)
    assert revoked.status_code in (200, 204), revoked.text
    # The revoked key can no longer read its batch; Redis shows how it ended: every
    # line not finished before the revocation failed with a 401.
    deadline = time.monotonic() + 20
    store = redis.Redis.from_url(REDIS_URL)
    try:
        [record] = [k for k in store.scan_iter("test-batches-*:batch:*") if k.endswith(b"}")]
        while store.hget(record, "status") != b"completed":
            assert time.monotonic() < deadline, store.hgetall(record)
            time.sleep(0.1)
        completed, failed = (int(store.hget(record, f) or 0) for f in ("completed", "failed"))
        assert completed + failed == 30, (completed, failed)
        assert failed >= 20, (completed, failed)
    finally:
        store.close()


def test_without_redis_batches_run_in_the_process(tmp_path: Path) -> None:
    with _stack(tmp_path, use_redis=False) as stack:
        sdk = stack.sdk(STATIC_KEY)
        lines = [completion_line("a", "one"), completion_line("b", "two")]
        batch = submit(sdk, tmp_path, lines, "/v1/completions")
        done = wait_for(sdk, batch.id, {"completed"})
        assert [o["custom_id"] for o in lines_of(sdk, done.output_file_id)] == ["a", "b"]


def _gateway_process(env: dict[str, str], log: Path) -> tuple[Child, str]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    child = Child(argv, log, env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return child, url
        except httpx.TransportError:
            pass
        assert child.alive(), child.log_tail()
        assert time.monotonic() < deadline, child.log_tail()
        time.sleep(0.05)


def test_a_gateway_killed_mid_batch_loses_and_doubles_nothing(tmp_path: Path) -> None:
    prefix = f"test-batches-{uuid.uuid4().hex[:10]}"
    engine = FakeEngineProcess("batch", tmp_path, models=MODEL)
    env = gateway_env(
        PORTICO_ENGINE_URL=engine.url, PORTICO_API_KEYS=STATIC_KEY, PORTICO_REDIS_URL=REDIS_URL,
        PORTICO_REDIS__PREFIX=prefix, PORTICO_BATCHES__LEASE_S="1.5",
        PORTICO_BATCHES__POLL_INTERVAL_S="0.05", PORTICO_BATCHES__CONCURRENCY="2",
    )  # fmt: skip
    first, first_url = _gateway_process(env, tmp_path / "first.log")
    second, second_url = _gateway_process(env, tmp_path / "second.log")
    try:
        sdk = openai.OpenAI(base_url=f"{first_url}/v1", api_key=STATIC_KEY, max_retries=0)
        ids = [f"k{i}" for i in range(30)]  # 0.5 s each, four at a time over two replicas
        batch = submit(sdk, tmp_path, [completion_line(i) for i in ids], "/v1/completions")
        deadline = time.monotonic() + 20
        while sdk.batches.retrieve(batch.id).request_counts.completed < 6:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.stop(signal.SIGKILL)  # mid-line: its two leased lines must be run again
        survivor = openai.OpenAI(base_url=f"{second_url}/v1", api_key=STATIC_KEY, max_retries=0)
        done = wait_for(survivor, batch.id, {"completed"}, timeout=60)
        output = lines_of(survivor, done.output_file_id)
        assert sorted(o["custom_id"] for o in output) == sorted(ids)  # none missing, none twice
        assert done.request_counts is not None
        assert done.request_counts.completed == 30
        assert done.error_file_id is None
    finally:
        second.stop()
        first.stop()
        engine.stop()
        _clean(prefix)


def test_a_caller_may_create_only_so_many_batches_a_minute(tmp_path: Path) -> None:
    """Failed batches count too: each create checks a whole file, so a caller cannot
    make the gateway validate 50,000-line files without end."""
    with _stack(tmp_path, tenant_max_active=2) as stack:
        sdk = stack.sdk(stack.key())
        bad = [chat_line("x", max_tokens=-1)]
        for _ in range(2):
            assert submit(sdk, tmp_path, bad, "/v1/chat/completions").status == "failed"
        with pytest.raises(openai.RateLimitError) as refused:
            submit(sdk, tmp_path, bad, "/v1/chat/completions")
        assert refused.value.code == "too_many_batches"
        other = stack.sdk(stack.key())  # another caller is not affected
        assert submit(other, tmp_path, bad, "/v1/chat/completions").status == "failed"


def test_a_gateway_shut_down_mid_batch_puts_its_lines_back_at_once(tmp_path: Path) -> None:
    """With a lease of a minute, a stopped replica's lines would wait that long for
    another; on a clean shutdown they are back in the queue before it exits."""
    prefix = f"test-batches-{uuid.uuid4().hex[:10]}"
    try:
        with ExitStack() as stack:
            engine = stack.enter_context(serving(FakeEngine().app))
            config = GatewaySettings(
                engine_url=engine, api_keys=[STATIC_KEY], redis_url=REDIS_URL,
                redis={"prefix": prefix}, batches={**FAST, "lease_s": 60.0},
            )  # fmt: skip
            url = stack.enter_context(serving(create_app(config)))
            sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=STATIC_KEY, max_retries=0)
            lines = [completion_line(f"s{i}") for i in range(20)]
            batch = submit(sdk, tmp_path, lines, "/v1/completions")
            deadline = time.monotonic() + 20
            while sdk.batches.retrieve(batch.id).request_counts.completed < 2:  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.05)
            stopped = time.time()
        with redis.Redis.from_url(REDIS_URL) as store:
            [leases] = list(store.scan_iter(f"{prefix}:batch:*:leases"))
            held = store.zrange(leases, 0, -1, withscores=True)
        assert held  # the two lines that were running
        assert all(until <= stopped + 1 for _, until in held), held  # not now + 60 s
    finally:
        _clean(prefix)
