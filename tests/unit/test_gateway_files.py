"""The Files API's pure parts: what a batch input file must be (each refusal naming its
line), and the store on its in-memory backend with a clock the test moves: exact
per-tenant byte counts, expiry and the sweep, sealed entries that do not open."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cryptography.fernet import Fernet

from gateway.errors import InvalidRequest, NotFound, PayloadTooLarge
from gateway.file_backends import MemoryFileBackend
from gateway.files import FileStore, check_batch_input, new_file_id, upload_cap
from gateway.sealing import Sealer
from gateway.settings import FilesSettings

MODEL = "m"


def _line(custom_id: str = "a", **changes: Any) -> bytes:
    request = {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings",
               "body": {"model": MODEL, "input": "x"}}  # fmt: skip
    return json.dumps({**request, **changes}).encode()


def _allowed(model: str) -> bool:
    return model == MODEL


def test_a_valid_file_passes_with_blank_lines_and_crlf() -> None:
    # Blank lines count towards max_lines: a file of newlines is no cheaper to scan.
    check_batch_input(_line("a") + b"\r\n\n" + _line("b") + b"\n", 3, _allowed)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (_line("a") + b"\n" + _line("a"), "Line 2: custom_id 'a' is not unique"),
        (_line() + b"\n\n\n" + b"null", "Line 4: not a JSON object"),
        (_line(custom_id=""), "Line 1: 'custom_id'"),
        (_line(method="post"), "Line 1: 'method'"),
        (_line(url="/v1/completions/"), "Line 1: 'url'"),
        (_line(body=[]), "Line 1: 'body'"),
        (_line(body={"model": 3}), "Line 1: 'body.model'"),
        (_line(body={"model": "other"}), "Line 1: this key may not use the model 'other'"),
        (b'{"custom_id": NaN}', "Line 1: not valid JSON"),
    ],
)
def test_each_bad_line_is_named(content: bytes, expected: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_batch_input(content, 100, _allowed)
    assert refused.value.message.startswith(expected)
    assert refused.value.param == "file"


def test_lines_are_counted_before_any_is_parsed() -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_batch_input(b"{" + b"\n" * 10, 5, _allowed)  # line 1 is bad, but too many first
    assert refused.value.code == "too_many_lines"
    check_batch_input(_line() + b"\n", 1, _allowed)  # a final newline ends a line, adds none


def test_ids_and_the_upload_cap() -> None:
    ids = {new_file_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("file-") and len(i) == 29 for i in ids)
    settings = FilesSettings(max_bytes=1000)
    assert upload_cap(settings, 10_000_000) == 1000 + 65_536
    assert upload_cap(settings, 5000) == 5000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _store(clock: Clock, sealer: Sealer | None = None, backend: MemoryFileBackend | None = None,
           **settings: Any) -> FileStore:  # fmt: skip
    return FileStore(backend or MemoryFileBackend(), FilesSettings(**settings), sealer, clock)


def test_bytes_are_counted_exactly_and_given_back_by_delete_and_expiry() -> None:
    clock = Clock()
    content = _line() + b"\n"
    store = _store(clock, tenant_max_bytes=2 * len(content), ttl_s=10)

    async def scenario() -> None:
        first = await store.create("t", "batch", "a.jsonl", content, _allowed)
        await store.create("t", "batch", "b.jsonl", content, _allowed)
        assert await store.usage("t") == 2 * len(content)
        with pytest.raises(InvalidRequest):
            await store.create("t", "batch", "c.jsonl", content, _allowed)
        await store.delete("t", first["id"])
        assert await store.usage("t") == len(content)
        clock.now += 10  # expires_at is reached: gone
        assert (await store.list("t", None, 10, "desc", None))["data"] == []
        assert await store.sweep() == 0  # listing already deleted it
        assert await store.usage("t") == 0
        third = await store.create("t", "batch", "c.jsonl", content, _allowed)
        clock.now += 11
        assert await store.sweep() == 1
        with pytest.raises(NotFound):
            await store.content("t", third["id"])

    asyncio.run(scenario())


def test_an_upload_at_quota_sweeps_expired_files_first() -> None:
    clock = Clock()
    content = _line() + b"\n"
    store = _store(clock, tenant_max_bytes=len(content), ttl_s=5)

    async def scenario() -> None:
        await store.create("t", "batch", "a", content, _allowed)
        clock.now += 5
        await store.create("t", "batch", "b", content, _allowed)  # no sweep ran meanwhile
        assert await store.usage("t") == len(content)

    asyncio.run(scenario())


def test_sealed_entries_open_only_under_their_key_and_tenant() -> None:
    clock = Clock()
    backend = MemoryFileBackend()
    sealer = Sealer.from_texts([Fernet.generate_key().decode()])
    sealed = _store(clock, sealer, backend)
    other_key = _store(clock, Sealer.from_texts([Fernet.generate_key().decode()]), backend)
    plain = _store(clock, None, backend)

    async def scenario() -> None:
        made = await sealed.create("t", "batch", "a", _line(), _allowed)
        assert await sealed.content("t", made["id"]) == _line()
        for store in (other_key, plain):
            with pytest.raises(NotFound):
                await store.retrieve("t", made["id"])
            with pytest.raises(NotFound):
                await store.content("t", made["id"])
        with pytest.raises(NotFound):
            await sealed.retrieve("u", made["id"])

    asyncio.run(scenario())


def test_a_file_over_the_size_limit_is_413() -> None:
    store = _store(Clock(), max_bytes=10)
    with pytest.raises(PayloadTooLarge):
        asyncio.run(store.create("t", "batch", "a", _line(), _allowed))
