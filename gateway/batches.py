"""The Batch API's batches, per tenant: creating one (its input checked line by line),
reading, listing and cancelling them. Running them is :mod:`gateway.batch_runner`;
where they live is :mod:`gateway.batch_backends` (docs/batch.md).

A batch belongs to the principal that created it, and runs as that principal: the
record keeps what the principal was allowed (its model allow-list and limits); an
API key is read again before every line, so revoking or changing it reaches its
running batches. Another tenant's batch id is the same 404 as one that never
existed. The batch object (metadata included) is sealed with the encryption keys
when they are set, under its own key name as authenticated data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.auth import Principal
from gateway.batch_backends import BatchBackend, Record
from gateway.errors import GatewayError, InvalidRequest, NotFound, RateLimited
from gateway.files import FileStore
from gateway.protocol import APIRequest
from gateway.sealing import Sealer, is_sealed
from gateway.settings import BatchesSettings

WINDOW_S = {"24h": 86_400}
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
_TIMES = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
_MAX_ERRORS = 100  # line errors kept on a batch that failed validation
_YIELD_EVERY = 256  # lines checked between two yields to the event loop

Validate = Callable[[str, bytes, Principal], Awaitable[APIRequest]]


class BatchCreate(BaseModel):
    """``client.batches.create``'s body."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(max_length=64)
    endpoint: Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # OpenAI's bounds: 16 pairs, keys up to 64 characters, values up to 512.
        if value is not None and (
            len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())
        ):
            raise ValueError("at most 16 pairs, keys of 64 and values of 512 characters")
        return value


@dataclass(frozen=True)
class InputLine:
    number: int  # in the file, 1-based, blank lines counted (as the upload's check counts)
    custom_id: str
    url: str
    body: bytes


@dataclass(frozen=True)
class Batch:
    """One batch as its runner needs it: who owns it and what it runs."""

    id: str
    tenant: str  # the digest its keys are under
    owner: Principal
    endpoint: str
    input_file_id: str
    record: Record


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(16)


def not_found(batch_id: str) -> NotFound:
    return NotFound(f"No batch found with id '{batch_id[:128]}'.", param="batch_id")


def tenant_digest(principal_id: str) -> str:
    return hashlib.sha256(principal_id.encode()).hexdigest()[:32]


def input_lines(content: bytes) -> list[InputLine]:
    """A batch file's requests, blank lines skipped (the upload checked their shape)."""
    found = []
    for number, line in enumerate(content.split(b"\n"), start=1):
        if line.strip():
            request = pydantic_core.from_json(line, allow_inf_nan=False)
            body = json.dumps(request["body"], ensure_ascii=False, separators=(",", ":"))
            found.append(InputLine(number, request["custom_id"], request["url"], body.encode()))
    return found


def _line_error(number: int, message: str, code: str, param: str | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": number}


class BatchStore:
    """Batches, per tenant; plain values in and out (no HTTP)."""

    def __init__(
        self,
        backend: BatchBackend,
        files: FileStore,
        settings: BatchesSettings,
        keep_s: int,
        sealer: Sealer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self._files = files
        self._settings = settings
        self.keep_s = keep_s  # a finished batch's record: as long as its files
        self._sealer = sealer
        self._clock = clock

    def _context(self, tenant: str, batch_id: str) -> bytes:
        return f"batches:meta:{tenant}:{batch_id}".encode()

    def _seal(self, meta: dict[str, Any], tenant: str, batch_id: str) -> str:
        data = json.dumps(meta, ensure_ascii=False, separators=(",", ":"), default=sorted).encode()
        if self._sealer is not None:
            data = self._sealer.seal(data, self._context(tenant, batch_id))
        return data.hex()

    def _meta(self, record: Record, tenant: str, batch_id: str) -> dict[str, Any] | None:
        stored = bytes.fromhex(record.get("meta", ""))
        if self._sealer is not None:
            opened = self._sealer.open(stored, self._context(tenant, batch_id))
        else:
            opened = None if is_sealed(stored) else stored
        try:
            meta = None if opened is None else json.loads(opened)
        except ValueError:
            return None
        return meta if isinstance(meta, dict) and meta.get("id") == batch_id else None

    async def create(
        self, principal: Principal, request: BatchCreate, validate: Validate
    ) -> dict[str, Any]:
        """Check the input file's every line against the endpoint and the normal request
        path's validation, then queue the batch; a batch whose lines do not all pass is
        created ``failed``, its ``errors`` naming each bad line (as OpenAI's does)."""
        tenant = tenant_digest(principal.id)
        await self._check_room(tenant)
        file = await self._files.retrieve(principal.id, request.input_file_id)
        if file.get("purpose") != "batch":  # a batch's output, say: not requests
            raise InvalidRequest(
                "The input file must be a file uploaded with purpose 'batch'.",
                param="input_file_id",
                code="invalid_input_file",
            )
        content = await self._files.content(principal.id, request.input_file_id)
        lines = input_lines(content)
        errors = await _check_lines(lines, request.endpoint, principal, validate)
        now = self._clock()
        batch_id = new_batch_id()
        meta = {
            "id": batch_id, "endpoint": request.endpoint,
            "input_file_id": request.input_file_id,
            "completion_window": request.completion_window, "metadata": request.metadata,
            "errors": errors or None, "owner": dataclasses.asdict(principal),
        }  # fmt: skip
        created = math.floor(now)
        fields: Record = {
            "meta": self._seal(meta, tenant, batch_id), "created_at": str(created),
            "expires_at": str(created + WINDOW_S[request.completion_window]),
            "total": str(len(lines)), "next": "0", "completed": "0", "failed": "0",
        }  # fmt: skip
        if errors:
            fields.update(status="failed", failed_at=str(created))
        else:
            fields.update(status="in_progress", in_progress_at=str(created))
        await self.backend.create(tenant, batch_id, fields, active=not errors)
        return self._object(batch_id, meta, fields)

    async def _check_room(self, tenant: str) -> None:
        """Refuse (429) a caller with ``tenant_max_active`` batches that are unfinished
        or were created in the last minute: the workers' share one tenant can take, and
        how often it can make the gateway check a file of 50,000 lines (a batch that
        fails validation is finished at once, so counting only unfinished ones would
        let it do that without end)."""
        limit = self._settings.tenant_max_active
        ids, _ = await self.backend.page(tenant, None, limit * 4)
        records = await self.backend.get_many(tenant, ids)
        recent = self._clock() - 60
        counted = sum(
            1
            for r in records
            if r is not None and (r["status"] not in FINISHED or float(r["created_at"]) > recent)
        )
        if counted >= limit:
            raise RateLimited(
                f"This caller has {counted} batches unfinished or created in the last "
                f"minute; at most {limit} are allowed.",
                60,
                code="too_many_batches",
            )

    def _object(self, batch_id: str, meta: dict[str, Any], record: Record) -> dict[str, Any]:
        """OpenAI's batch object from the sealed part and the record's live fields."""
        errors = meta.get("errors") or (
            json.loads(record["errors"]) if "errors" in record else None
        )
        times = {f"{name}_at": _int(record.get(f"{name}_at")) for name in _TIMES}
        return {
            "id": batch_id, "object": "batch", "endpoint": meta["endpoint"],
            "errors": None if not errors else {"object": "list", "data": errors},
            "input_file_id": meta["input_file_id"],
            "completion_window": meta["completion_window"], "status": record["status"],
            "output_file_id": record.get("output_file_id"),
            "error_file_id": record.get("error_file_id"),
            "created_at": int(record["created_at"]), "expires_at": int(record["expires_at"]),
            **times,
            "request_counts": {
                "total": int(record["total"]), "completed": int(record.get("completed", 0)),
                "failed": int(record.get("failed", 0)),
            },
            "metadata": meta.get("metadata"),
        }  # fmt: skip

    async def load(self, tenant: str, batch_id: str) -> Batch | None:
        """A batch by its tenant digest, or None (absent, or its record does not open)."""
        if not batch_id.startswith("batch_"):
            return None
        record = await self.backend.get(tenant, batch_id)
        meta = None if record is None else self._meta(record, tenant, batch_id)
        if record is None or meta is None:
            return None
        owner = meta["owner"]
        for name in ("models", "permissions"):
            if owner.get(name) is not None:
                owner[name] = frozenset(owner[name])
        return Batch(
            batch_id, tenant, Principal(**owner), meta["endpoint"], meta["input_file_id"], record
        )

    async def retrieve(self, principal_id: str, batch_id: str) -> dict[str, Any]:
        tenant = tenant_digest(principal_id)
        record = (
            None if not batch_id.startswith("batch_") else await self.backend.get(tenant, batch_id)
        )
        meta = None if record is None else self._meta(record, tenant, batch_id)
        if record is None or meta is None:
            raise not_found(batch_id)
        return self._object(batch_id, meta, record)

    async def cancel(self, principal_id: str, batch_id: str) -> dict[str, Any]:
        """Stop handing out new lines; lines running finish and are kept. A batch that
        is not running is answered as it is (cancelling a finished batch changes
        nothing), as OpenAI answers."""
        tenant = tenant_digest(principal_id)
        await self.retrieve(principal_id, batch_id)  # 404 for another tenant's
        await self.backend.cancel(tenant, batch_id, self._clock())
        return await self.retrieve(principal_id, batch_id)

    async def list(self, principal_id: str, after: str | None, limit: int) -> dict[str, Any]:
        """OpenAI's list: this caller's batches, newest first."""
        tenant = tenant_digest(principal_id)
        ids, has_more = await self.backend.page(tenant, after, limit)
        data = []
        records = await self.backend.get_many(tenant, ids)
        for batch_id, record in zip(ids, records, strict=True):
            meta = None if record is None else self._meta(record, tenant, batch_id)
            if record is not None and meta is not None:
                data.append(self._object(batch_id, meta, record))
        # Finished batches' records expire; their ids leave the listing as it meets them.
        await self.backend.forget(
            tenant, [b for b, r in zip(ids, records, strict=True) if r is None]
        )
        return {
            "object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }  # fmt: skip


def _int(value: str | None) -> int | None:
    return None if value is None else int(float(value))


async def _check_lines(
    lines: list[InputLine], endpoint: str, principal: Principal, validate: Validate
) -> list[dict[str, Any]]:
    """Each line's refusal, as OpenAI's batch errors (1-based ``line``), at most
    ``_MAX_ERRORS``; a refusal that is not the line's fault (an engine or Redis
    outage: 5xx) is raised, and the batch is not created."""
    errors: list[dict[str, Any]] = []
    for index, line in enumerate(lines, start=1):
        number = line.number
        if index % _YIELD_EVERY == 0:
            await asyncio.sleep(0)  # a 50,000-line file must not stall every other request
        if line.url != endpoint:
            message = f"The line's url '{line.url}' is not the batch's endpoint '{endpoint}'."
            errors.append(_line_error(number, message, "mismatched_url", "url"))
        else:
            try:
                parsed = await validate(line.url, line.body, principal)
            except GatewayError as exc:
                if exc.status_code >= 500:
                    raise
                code = exc.code or "invalid_request"
                errors.append(_line_error(number, exc.message, code, exc.param))
                continue
            if parsed.stream:
                message = "A batch line cannot be streamed; remove 'stream'."
                errors.append(_line_error(number, message, "invalid_request", "body.stream"))
        if len(errors) >= _MAX_ERRORS:
            break
    return errors
