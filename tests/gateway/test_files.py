"""``/v1/files`` through the real app, the real Redis and the real OpenAI SDK: a round
trip byte for byte, tenant isolation, the batch input checks (with their line numbers,
storing nothing), the upload's own body cap, the per-tenant quota, expiry and its
sweep, sealing at rest, malformed multipart, and the in-memory store without Redis."""

from __future__ import annotations

import json
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
from cryptography.fernet import Fernet

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway import rawhttp
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.servers import serving

ADMIN = "admin-token-for-files-tests-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
REDIS_URL = "redis://127.0.0.1:6379/0"
STATIC_KEY = "pk-files-static-0123456789"


def line(custom_id: str = "r1", **changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    }
    return {**request, **changes}


def jsonl(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in lines)


class Stack:
    def __init__(self, client: httpx.Client, prefix: str | None, tmp: Path) -> None:
        self.client = client
        self.prefix = prefix
        self.tmp = tmp
        self.port = int(str(client.base_url).rstrip("/").rsplit(":", 1)[1])

    def key(self, **spec: Any) -> str:
        spec = {"name": "files", **spec}
        created = self.client.post("/admin/keys", json=spec, headers=ADMIN_AUTH)
        assert created.status_code == 201, created.text
        return str(created.json()["key"])

    def sdk(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.client.base_url}/v1", api_key=key, max_retries=0)

    def path(self, content: bytes, name: str = "input.jsonl") -> Path:
        path = self.tmp / f"{uuid.uuid4().hex[:6]}-{name}"
        path.write_bytes(content)
        return path

    def upload(self, sdk: openai.OpenAI, content: bytes) -> Any:
        with self.path(content).open("rb") as handle:
            return sdk.files.create(file=handle, purpose="batch")

    def redis_keys(self) -> list[bytes]:
        store = redis.Redis.from_url(REDIS_URL)
        try:
            return list(store.scan_iter(f"{self.prefix}:files:*"))
        finally:
            store.close()


@contextmanager
def _stack(tmp: Path, use_redis: bool = True, **settings: Any) -> Iterator[Stack]:
    prefix = f"test-files-{uuid.uuid4().hex[:10]}" if use_redis else None
    with ExitStack() as stack:
        engine = stack.enter_context(serving(FakeEngine().app))
        where: dict[str, Any] = (
            {"redis_url": REDIS_URL, "redis": {"prefix": prefix}}
            if use_redis
            else {"api_keys": [STATIC_KEY]}
        )
        config = GatewaySettings(engine_url=engine, admin_token=ADMIN, **where, **settings)
        url = stack.enter_context(serving(create_app(config)))
        client = stack.enter_context(httpx.Client(base_url=url, timeout=30))
        yield Stack(client, prefix, tmp)
    if prefix is not None:
        store = redis.Redis.from_url(REDIS_URL)
        keys = list(store.scan_iter(f"{prefix}:*"))
        if keys:
            store.delete(*keys)
        store.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Stack]:
    with _stack(tmp_path) as stack:
        yield stack


def test_a_file_round_trips_byte_for_byte_through_the_sdk(gateway: Stack) -> None:
    sdk = gateway.sdk(gateway.key())
    # Blank lines, a CRLF ending and non-ASCII text: the bytes come back as they went.
    content = jsonl(line("a"), line("b")) + b"\n" + json.dumps(line("c\u00e9")).encode() + b"\r\n"
    made = gateway.upload(sdk, content)
    assert made.id.startswith("file-")
    assert len(made.id) >= 29
    assert (made.object, made.purpose, made.status, made.bytes) == (
        "file", "batch", "processed", len(content)
    )  # fmt: skip
    assert made.expires_at == made.created_at + 30 * 86400
    assert made.filename.endswith("input.jsonl")
    assert sdk.files.retrieve(made.id).model_dump() == made.model_dump()
    assert sdk.files.content(made.id).read() == content
    listed = sdk.files.list()
    assert [f.id for f in listed.data] == [made.id]
    deleted = sdk.files.delete(made.id)
    assert (deleted.id, deleted.deleted) == (made.id, True)
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(made.id)
    assert gateway.redis_keys() == []  # nothing left behind, the byte count included


def test_list_pages_by_creation_time_in_either_order(gateway: Stack) -> None:
    sdk = gateway.sdk(gateway.key())
    made = [gateway.upload(sdk, jsonl(line(str(i)))).id for i in range(5)]
    assert [f.id for f in sdk.files.list(order="asc")] == made
    newest_first = gateway.client.get(
        "/v1/files", params={"limit": 2}, headers={"Authorization": f"Bearer {sdk.api_key}"}
    ).json()
    assert [f["id"] for f in newest_first["data"]] == made[::-1][:2]
    assert newest_first["has_more"] is True
    assert (newest_first["first_id"], newest_first["last_id"]) == (made[4], made[3])
    # The SDK's auto-pagination follows last_id as `after`.
    assert [f.id for f in sdk.files.list(limit=2, order="asc")] == made
    assert [f.id for f in sdk.files.list(purpose="batch", order="asc")] == made
    assert sdk.files.list(purpose="fine-tune").data == []


def test_another_tenant_can_neither_list_read_nor_delete_a_file(gateway: Stack) -> None:
    owner = gateway.sdk(gateway.key())
    other = gateway.sdk(gateway.key())
    made = gateway.upload(owner, jsonl(line()))
    assert other.files.list().data == []
    for attempt in (
        lambda: other.files.retrieve(made.id),
        lambda: other.files.content(made.id),
        lambda: other.files.delete(made.id),
    ):
        with pytest.raises(openai.NotFoundError) as refused:
            attempt()
        body = refused.value.body
        assert isinstance(body, dict)
        # Exactly what an id that never existed gets.
        assert body == {
            "message": f"No such File object: {made.id}",
            "type": "invalid_request_error",
            "param": "id",
            "code": "file_not_found",
        }
    assert owner.files.content(made.id).read() == jsonl(line())


BAD_INPUTS = [
    pytest.param(b"{not json}\n", 1, "not valid JSON", id="not-json"),
    pytest.param(jsonl(line()) + b"[1, 2]\n", 2, "not a JSON object", id="not-an-object"),
    pytest.param(jsonl(line(), {**line(), "custom_id": 7}), 2, "custom_id", id="custom-id-type"),
    pytest.param(jsonl(line("x"), line("y"), line("x")), 3, "not unique", id="duplicate-id"),
    pytest.param(jsonl(line(method="GET")), 1, "'method'", id="method"),
    pytest.param(jsonl(line(url="/v1/responses")), 1, "'url'", id="url"),
    pytest.param(jsonl(line(body="text")), 1, "'body'", id="body-type"),
    pytest.param(jsonl(line(body={"messages": []})), 1, "body.model", id="no-model"),
    pytest.param(b"\n\n" + jsonl(line(body={"model": "other"})), 3, "may not use", id="model"),
    pytest.param(b"\xff\xfe\n", 1, "not valid JSON", id="not-utf8"),
    pytest.param(b"[" * 100_000 + b"\n", 1, "not valid JSON", id="deep-nesting"),
]


@pytest.mark.parametrize(("content", "number", "problem"), BAD_INPUTS)
def test_a_bad_batch_line_is_refused_with_its_number_and_nothing_is_stored(
    gateway: Stack, content: bytes, number: int, problem: str
) -> None:
    sdk = gateway.sdk(gateway.key(models=[MODEL]))
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.upload(sdk, content)
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["message"].startswith(f"Line {number}: ")
    assert problem in body["message"]
    assert (body["param"], body["type"]) == ("file", "invalid_request_error")
    assert sdk.files.list().data == []
    assert gateway.redis_keys() == []


def test_an_empty_file_a_line_bomb_and_another_purpose_are_refused(tmp_path: Path) -> None:
    with _stack(tmp_path, files={"max_lines": 3}) as stack:
        sdk = stack.sdk(stack.key())
        for content, code in ((b"", "empty_file"), (b"\n \n", "empty_file"),
                              (jsonl(line()) + b"\n" * 100_000, "too_many_lines")):  # fmt: skip
            with pytest.raises(openai.BadRequestError) as refused:
                stack.upload(sdk, content)
            assert isinstance(refused.value.body, dict)
            assert refused.value.body["code"] == code
        assert stack.upload(sdk, jsonl(line("1"), line("2"), line("3"))).bytes > 0
        handle = stack.path(jsonl(line())).open("rb")
        with handle, pytest.raises(openai.BadRequestError) as purpose:
            sdk.files.create(file=handle, purpose="fine-tune")
        assert isinstance(purpose.value.body, dict)
        assert purpose.value.body["param"] == "purpose"
        assert len(sdk.files.list().data) == 1


def _raw_upload(stack: Stack, key: str, declared: int, body: bytes) -> rawhttp.Answer:
    headers = [
        ("authorization", f"Bearer {key}"),
        ("content-type", "multipart/form-data; boundary=b0undary"),
        ("content-length", str(declared)),
    ]
    return rawhttp.exchange(stack.port, rawhttp.head("POST", "/v1/files", headers), body,
                            step=65_536, wait_s=10)  # fmt: skip


def test_an_upload_over_its_cap_is_413_before_its_body_is_read(tmp_path: Path) -> None:
    cap = 100_000
    with _stack(tmp_path, files={"max_bytes": cap}) as stack:
        key = stack.key()
        body = b"x" * (16 * 1_048_576)  # more than socket buffers hold: unread, it stays unsent
        answer = _raw_upload(stack, key, len(body), body)
        assert answer.status == 413
        assert answer.sent < len(body)
        assert answer.headers["connection"] == "close"
        assert set(json.loads(answer.body)["error"]) == {"message", "type", "param", "code"}
        # Within the body cap (framing allowed for) but a file over max_bytes: 413 too.
        sdk = stack.sdk(key)
        with pytest.raises(openai.APIStatusError) as large:
            stack.upload(sdk, jsonl(line()) + b" " * cap)
        assert large.value.status_code == 413
        assert stack.redis_keys() == []
        # Other routes keep the general cap (1 MiB), not the upload's.
        other = stack.client.post(
            "/v1/chat/completions",
            content=b" " * (2 * 1_048_576),
            headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
        )
        assert other.status_code == 413


def test_the_upload_cap_is_above_the_general_body_cap(gateway: Stack) -> None:
    sdk = gateway.sdk(gateway.key())
    padding = "p" * 1000
    lines = [line(str(i), body={"model": MODEL, "pad": padding}) for i in range(2000)]
    content = jsonl(*lines)  # ~2.2 MB, over the 1 MiB of every other route
    assert len(content) > 2 * 1_048_576
    made = gateway.upload(sdk, content)
    assert sdk.files.content(made.id).read() == content


def test_an_upload_without_credentials_is_401_before_its_body_is_read(gateway: Stack) -> None:
    body = b"x" * (16 * 1_048_576)
    headers = [("content-type", "multipart/form-data; boundary=b"),
               ("content-length", str(len(body)))]  # fmt: skip
    answer = rawhttp.exchange(gateway.port, rawhttp.head("POST", "/v1/files", headers), body,
                              step=65_536, wait_s=10)  # fmt: skip
    assert answer.status == 401
    assert answer.sent < len(body)


def test_the_per_tenant_quota_counts_exactly_and_gets_bytes_back(tmp_path: Path) -> None:
    one = jsonl(line())
    with _stack(tmp_path, files={"tenant_max_bytes": 3 * len(one)}) as stack:
        sdk, other = stack.sdk(stack.key()), stack.sdk(stack.key())
        made = [stack.upload(sdk, one) for _ in range(3)]
        with pytest.raises(openai.BadRequestError) as full:
            stack.upload(sdk, one)
        assert isinstance(full.value.body, dict)
        assert full.value.body["code"] == "file_storage_limit_exceeded"
        assert stack.upload(other, one).bytes == len(one)  # another tenant's own quota
        sdk.files.delete(made[0].id)
        assert stack.upload(sdk, one).bytes == len(one)  # the deleted file's bytes came back
        with pytest.raises(openai.BadRequestError):
            stack.upload(sdk, one)


def test_the_store_wide_cap_bounds_all_callers_together(tmp_path: Path) -> None:
    one = jsonl(line())
    settings = {"tenant_max_bytes": 2 * len(one), "total_max_bytes": 3 * len(one)}
    with _stack(tmp_path, files=settings) as stack:
        first, second = stack.sdk(stack.key()), stack.sdk(stack.key())
        made = [stack.upload(first, one) for _ in range(2)]
        stack.upload(second, one)
        with pytest.raises(openai.InternalServerError) as full:  # 503: not the caller's doing
            stack.upload(second, one)
        assert full.value.status_code == 503
        assert isinstance(full.value.body, dict)
        assert full.value.body["code"] == "file_storage_full"
        first.files.delete(made[0].id)
        assert stack.upload(second, one).bytes == len(one)  # the store's bytes came back


def test_an_expired_file_is_gone_its_bytes_come_back_and_the_sweep_removes_it(
    tmp_path: Path,
) -> None:
    one = jsonl(line())
    settings = {"ttl_s": 1, "sweep_interval_s": 0.2, "tenant_max_bytes": len(one)}
    with _stack(tmp_path, files=settings) as stack:
        sdk = stack.sdk(stack.key())
        read = stack.upload(sdk, one)
        keys = stack.redis_keys()
        assert keys, "stored in Redis"
        store = redis.Redis.from_url(REDIS_URL)
        try:
            assert all(store.ttl(k) == -1 for k in keys), "no Redis TTL: never evicted"
        finally:
            store.close()
        time.sleep(1.2)
        with pytest.raises(openai.NotFoundError):
            sdk.files.retrieve(read.id)
        # Its bytes were given back: the quota holds exactly one file again.
        again = stack.upload(sdk, one)
        time.sleep(1.6)  # expired, then swept without anyone reading it
        assert stack.redis_keys() == []
        with pytest.raises(openai.NotFoundError):
            sdk.files.content(again.id)


def test_files_are_sealed_at_rest(tmp_path: Path) -> None:
    secret = b"a-very-recognisable-prompt-text"
    content = jsonl(line(body={"model": MODEL, "prompt": secret.decode()}))
    with _stack(tmp_path, encryption_keys=Fernet.generate_key().decode()) as stack:
        sdk = stack.sdk(stack.key())
        made = stack.upload(sdk, content)
        store = redis.Redis.from_url(REDIS_URL)
        try:
            hashes = [k for k in stack.redis_keys() if k.endswith(made.id.encode())]
            assert len(hashes) == 1
            stored = store.hgetall(hashes[0])
        finally:
            store.close()
        blob = b"".join(stored.values())
        assert secret not in blob
        assert b"input.jsonl" not in blob  # the file name, in the metadata, too
        assert sdk.files.content(made.id).read() == content


_PURPOSE = b'--x\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
_FILE_PART = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n{}\r\n'
MULTIPART = "multipart/form-data; boundary=x"
MALFORMED = [
    pytest.param("application/json", b'{"purpose": "batch"}', id="not-multipart"),
    pytest.param("multipart/form-data", b"--x\r\n", id="no-boundary"),
    pytest.param(MULTIPART, b"garbage without parts", id="no-parts"),
    pytest.param(MULTIPART, _PURPOSE + b"batch\r\n--x--\r\n", id="no-file"),
    pytest.param(MULTIPART, _FILE_PART + _FILE_PART + b"--x--\r\n", id="two-files"),
    pytest.param(MULTIPART, _PURPOSE + b"b" * 5000 + b"\r\n--x--\r\n", id="huge-field"),
    pytest.param(
        MULTIPART,
        b"--x\r\nContent-Disposition: form-data\r\n\r\nbatch\r\n--x--\r\n",
        id="unnamed-part",
    ),
]


@pytest.mark.parametrize(("content_type", "body"), MALFORMED)
def test_malformed_multipart_is_an_openai_400(
    gateway: Stack, content_type: str, body: bytes
) -> None:
    key = gateway.key()
    answer = gateway.client.post(
        "/v1/files",
        content=body,
        headers={"Authorization": f"Bearer {key}", "content-type": content_type},
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


def test_without_redis_files_live_in_the_process(tmp_path: Path) -> None:
    with _stack(tmp_path, use_redis=False) as stack:
        sdk = stack.sdk(STATIC_KEY)
        content = jsonl(line("a"), line("b"))
        made = stack.upload(sdk, content)
        assert sdk.files.content(made.id).read() == content
        assert [f.id for f in sdk.files.list()] == [made.id]
        sdk.files.delete(made.id)
        assert sdk.files.list().data == []
