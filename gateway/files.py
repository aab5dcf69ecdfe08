"""The Files API's files, per tenant: what an upload must be, and the store that keeps
it (the Batch API's input; docs/batch.md).

A ``purpose=batch`` file is checked whole at upload, so a batch never starts on input
it cannot run: each non-empty line is one JSON request (``custom_id`` unique in the
file, ``method`` POST, ``url`` one of the three engine routes a batch may call, a
``body`` naming a model the uploader may use). The body is not checked further here:
the batch runner sends each through the normal request path, which does. A refusal
names the first bad line (1-based) and stores nothing.

Files are kept under a digest of their owner (:mod:`gateway.file_backends`), so
another tenant's id finds nothing: the same 404 as an id that never existed. The
metadata and the content are sealed with the encryption keys when they are set, each
under its own key name as authenticated data; the content is compressed first. An
entry that does not open is treated as absent, never returned as garbage. Expiry is
the store's, not Redis's (why: the backends' docstring): an expired file is absent on
every read (and deleted then, giving its bytes back), and :meth:`FileStore.sweep`
deletes the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import secrets
import time
import zlib
from collections.abc import Callable
from typing import Any, Literal

import pydantic_core

from gateway.errors import (
    BackendUnavailable,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RedisUnavailable,
)
from gateway.file_backends import STORE_FULL, STORED, TENANT_FULL, Entry, FileBackend
from gateway.sealing import Sealer, is_sealed
from gateway.settings import FilesSettings

_log = logging.getLogger("portico.files")

PURPOSES = frozenset({"batch"})
BATCH_URLS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
# What multipart framing adds around the file (boundaries, part headers, the purpose
# field): the upload's body cap is the file cap plus this.
MULTIPART_OVERHEAD = 65_536
MAX_FILENAME = 255
_SWEEP_BATCH = 500


def new_file_id() -> str:
    """``file-`` and 24 random URL-safe characters (OpenAI's shape; 144 bits)."""
    return "file-" + secrets.token_urlsafe(18)


def upload_cap(settings: FilesSettings, max_buffered_body_bytes: int) -> int:
    """The upload route's body cap: a file at its limit fits with its framing. Never more
    than one process may buffer at once (a larger body could only ever get 503)."""
    return min(settings.max_bytes + MULTIPART_OVERHEAD, max_buffered_body_bytes)


def not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id[:256]}", param="id", code="file_not_found")


def _bad_line(number: int, problem: str) -> InvalidRequest:
    return InvalidRequest(f"Line {number}: {problem}", param="file", code="invalid_batch_input")


def check_upload(purpose: str, filename: str, content: bytes, settings: FilesSettings) -> None:
    """Refuse what no purpose accepts: an unknown purpose, a bad name, an empty or too
    large file (400, 413)."""
    if purpose not in PURPOSES:
        allowed = ", ".join(sorted(PURPOSES))
        raise InvalidRequest(
            f"Invalid purpose '{purpose[:64]}': this gateway accepts {allowed}.", param="purpose"
        )
    if not filename or len(filename) > MAX_FILENAME:
        raise InvalidRequest(f"A file name of 1 to {MAX_FILENAME} characters.", param="file")
    if len(content) > settings.max_bytes:
        raise PayloadTooLarge(
            f"File is larger than {settings.max_bytes} bytes.", param="file", code="file_too_large"
        )
    if not content.strip():
        raise InvalidRequest("The file is empty.", param="file", code="empty_file")


def check_batch_input(content: bytes, max_lines: int, may_use: Callable[[str], bool]) -> None:
    """Refuse (400, naming the first bad line) a batch input file the batch runner could
    not run; see the module docstring."""
    # Counted before anything is split or parsed: a file of newlines is a line bomb.
    lines = content.count(b"\n") + (0 if content.endswith(b"\n") else 1)
    if lines > max_lines:
        raise InvalidRequest(
            f"The file has {lines} lines; at most {max_lines} are allowed.",
            param="file",
            code="too_many_lines",
        )
    seen: set[str] = set()
    for number, line in enumerate(content.split(b"\n"), start=1):
        if line.strip():
            custom_id = _check_line(number, line, may_use)
            if custom_id in seen:
                raise _bad_line(number, f"custom_id '{custom_id[:64]}' is not unique in the file.")
            seen.add(custom_id)


def _check_line(number: int, line: bytes, may_use: Callable[[str], bool]) -> str:
    """One request line's ``custom_id``, or the 400 saying what is wrong with it."""
    try:
        request = pydantic_core.from_json(line, allow_inf_nan=False)
    except ValueError:
        raise _bad_line(number, "not valid JSON.") from None
    if not isinstance(request, dict):
        raise _bad_line(number, "not a JSON object.")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _bad_line(number, "'custom_id' must be a non-empty string.")
    if request.get("method") != "POST":
        raise _bad_line(number, "'method' must be 'POST'.")
    if request.get("url") not in BATCH_URLS:
        raise _bad_line(number, f"'url' must be one of {', '.join(sorted(BATCH_URLS))}.")
    body = request.get("body")
    if not isinstance(body, dict):
        raise _bad_line(number, "'body' must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad_line(number, "'body.model' must be a string.")
    if not may_use(model):
        raise _bad_line(number, f"this key may not use the model '{model[:128]}'.")
    return custom_id


class FileStore:
    """Uploaded files, per tenant; plain values in and out (no HTTP)."""

    def __init__(
        self,
        backend: FileBackend,
        settings: FilesSettings,
        sealer: Sealer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._sealer = sealer
        self._clock = clock

    @staticmethod
    def _tenant(tenant: str) -> str:
        return hashlib.sha256(tenant.encode()).hexdigest()[:32]

    def _seal(self, data: bytes, context: bytes) -> bytes:
        return data if self._sealer is None else self._sealer.seal(data, context)

    def _open(self, stored: bytes, context: bytes) -> bytes | None:
        if self._sealer is None:
            return None if is_sealed(stored) else stored
        return self._sealer.open(stored, context)

    async def create(
        self,
        tenant: str,
        purpose: str,
        filename: str,
        content: bytes,
        may_use: Callable[[str], bool],
    ) -> dict[str, Any]:
        """Check and keep an upload; its file object. 400/413 for a file refused."""
        check_upload(purpose, filename, content, self._settings)
        check_batch_input(content, self._settings.max_lines, may_use)
        return await self.keep(tenant, purpose, filename, content)

    async def keep(
        self, tenant: str, purpose: str, filename: str, content: bytes
    ) -> dict[str, Any]:
        """Store ``content`` as a file of ``tenant``'s, unchecked (the gateway's own
        files: a batch's output); its file object. 400 past the tenant's quota, 503
        past the store's."""
        settings = self._settings
        now = self._clock()
        file_id = new_file_id()
        expires_at = math.floor(now) + settings.ttl_s
        file = {
            "id": file_id, "object": "file", "bytes": len(content), "created_at": math.floor(now),
            "filename": filename, "purpose": purpose, "status": "processed",
            "status_details": None, "expires_at": expires_at,
        }  # fmt: skip
        digest = self._tenant(tenant)
        context = f"{digest}:{file_id}".encode()
        meta = json.dumps(file, ensure_ascii=False, separators=(",", ":")).encode()
        entry = Entry(
            meta=self._seal(meta, b"files:meta:" + context),
            content=self._seal(zlib.compress(content, 1), b"files:content:" + context),
            size=len(content),
            created=now,
            expires_at=float(expires_at),
        )
        quota, cap = settings.tenant_max_bytes, settings.total_max_bytes
        stored = await self._backend.put(digest, file_id, entry, quota, cap)
        if stored != STORED:
            await self.sweep()  # expired files not yet swept may be what fills the store
            stored = await self._backend.put(digest, file_id, entry, quota, cap)
        if stored == TENANT_FULL:
            raise InvalidRequest(
                f"Storing this file would exceed this caller's {quota} bytes of file "
                "storage; delete files first.",
                param="file",
                code="file_storage_limit_exceeded",
            )
        if stored == STORE_FULL:
            # Not this caller's doing: the gateway's file storage as a whole is full.
            raise BackendUnavailable(
                "This gateway's file storage is full; retry later.",
                code="file_storage_full",
                headers={"retry-after": "60"},
            )
        return file

    async def _entry(self, digest: str, file_id: str, content: bool) -> Entry | None:
        """The live entry of ``file_id``; an expired one is deleted and is None."""
        if not file_id.startswith("file-"):
            return None
        entry = await self._backend.get(digest, file_id, content)
        if entry is not None and entry.expires_at <= self._clock():
            await self._backend.remove(digest, file_id)
            return None
        return entry

    def _file(self, digest: str, file_id: str, entry: Entry) -> dict[str, Any] | None:
        opened = self._open(entry.meta, f"files:meta:{digest}:{file_id}".encode())
        try:
            file = None if opened is None else json.loads(opened)
        except ValueError:
            return None
        return file if isinstance(file, dict) and file.get("id") == file_id else None

    async def retrieve(self, tenant: str, file_id: str) -> dict[str, Any]:
        digest = self._tenant(tenant)
        entry = await self._entry(digest, file_id, content=False)
        file = None if entry is None else self._file(digest, file_id, entry)
        if file is None:
            raise not_found(file_id)
        return file

    async def content(self, tenant: str, file_id: str) -> bytes:
        """The file's bytes, exactly as uploaded."""
        digest = self._tenant(tenant)
        entry = await self._entry(digest, file_id, content=True)
        opened = None
        if entry is not None:
            opened = self._open(entry.content, f"files:content:{digest}:{file_id}".encode())
        data = None if opened is None else self._inflate(opened)
        if data is None:
            raise not_found(file_id)
        return data

    def _inflate(self, stored: bytes) -> bytes | None:
        inflater = zlib.decompressobj()
        # An upload is at most max_bytes; a batch's output, at most its owner's quota.
        limit = max(self._settings.max_bytes, self._settings.tenant_max_bytes)
        try:
            raw = inflater.decompress(stored, limit + 1)
        except zlib.error:
            return None
        return raw if inflater.eof and len(raw) <= limit else None

    async def delete(self, tenant: str, file_id: str) -> dict[str, Any]:
        digest = self._tenant(tenant)
        if await self._entry(digest, file_id, content=False) is None:
            raise not_found(file_id)
        if not await self._backend.remove(digest, file_id):
            raise not_found(file_id)  # deleted meanwhile by another request
        return {"id": file_id, "object": "file", "deleted": True}

    async def list(
        self,
        tenant: str,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
        purpose: str | None,
    ) -> dict[str, Any]:
        """OpenAI's list: a page of this tenant's live files by creation time. An
        ``after`` that names no file of this tenant's is an empty page."""
        digest = self._tenant(tenant)
        page = await self._backend.page(digest, after, limit, order == "desc")
        data = []
        now = self._clock()
        entries = await self._backend.get_many(digest, page.ids)
        for file_id, entry in zip(page.ids, entries, strict=True):
            if entry is not None and entry.expires_at <= now:
                await self._backend.remove(digest, file_id)  # gives its bytes back
                continue
            file = None if entry is None else self._file(digest, file_id, entry)
            if file is not None and (purpose is None or file.get("purpose") == purpose):
                data.append(file)
        first = data[0]["id"] if data else None
        last = data[-1]["id"] if data else None
        return {
            "object": "list", "data": data, "has_more": page.has_more,
            "first_id": first, "last_id": last,
        }  # fmt: skip

    async def usage(self, tenant: str) -> int:
        """The bytes ``tenant``'s files hold against its quota."""
        return await self._backend.usage(self._tenant(tenant))

    async def sweep(self) -> int:
        """Delete every expired file; how many there were."""
        removed = 0
        while True:
            due = await self._backend.expired(self._clock(), _SWEEP_BATCH)
            for digest, file_id in due:
                removed += await self._backend.remove(digest, file_id)
            if len(due) < _SWEEP_BATCH:
                return removed

    async def sweep_forever(self) -> None:
        """:meth:`sweep` every ``sweep_interval_s``; a Redis outage skips a round."""
        while True:
            await asyncio.sleep(self._settings.sweep_interval_s)
            try:
                removed = await self.sweep()
            except RedisUnavailable as exc:
                _log.warning("file sweep skipped: redis unavailable (%s)", exc.reason)
                continue
            if removed:
                _log.info("file sweep: %d expired files deleted", removed)
