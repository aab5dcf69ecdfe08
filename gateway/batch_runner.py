"""The Batch API's workers: every replica runs ``concurrency`` of them, taking lines of
any tenant's batch from the shared store (:mod:`gateway.batch_backends`).

One step is one unit of work: a line run, or a batch finalized. A line runs through
the interactive path (``GenerationService.validate`` and ``respond``) as the batch's
owner, marked as batch work: it takes an engine slot only when no interactive request
waits for one, it is counted in the batch tokens-per-minute window instead of the
key's rpm and tpm, and the key's token budget is charged. While it runs, its lease is
renewed; a refusal for now (a 503, a 429 with Retry-After) puts it back for later;
anything else is its result, kept once. Workers take batches in turn, so one large
batch does not hold every worker while another waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gateway import telemetry
from gateway.auth import Principal, principal_for_key
from gateway.batch_backends import DONE, EXPIRED, NOT_RUNNING
from gateway.batches import FINISHED, Batch, BatchStore, InputLine, input_lines
from gateway.errors import (
    AuthenticationFailed,
    BackendUnavailable,
    EngineUnavailable,
    GatewayError,
    InvalidRequest,
    NotFound,
    RateLimited,
    RedisUnavailable,
)
from gateway.exchange import Call
from gateway.files import FileStore
from gateway.generation import GenerationService
from gateway.keys import KeyStore
from gateway.metrics import Metrics
from gateway.sealing import Sealer
from gateway.settings import BatchesSettings

_log = logging.getLogger("portico.batches")
_ACTIVE_SCAN = 256  # unfinished batches one step looks at


class _Later(Exception):
    """The line was refused for now: run it again after ``after_s``."""

    def __init__(self, after_s: float) -> None:
        super().__init__(after_s)
        self.after_s = after_s


def result_line(line: InputLine, request_id: str, status: int, body: Any) -> dict[str, Any]:
    """One line of a batch's output or error file, in OpenAI's format."""
    return {
        "id": request_id, "custom_id": line.custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": None,
    }  # fmt: skip


def _unrun_line(line: InputLine, code: str, message: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{secrets.token_hex(16)}", "custom_id": line.custom_id,
        "response": None, "error": {"code": code, "message": message},
    }  # fmt: skip


class BatchRunner:
    def __init__(
        self,
        store: BatchStore,
        files: FileStore,
        generation: GenerationService,
        keys: KeyStore,
        settings: BatchesSettings,
        metrics: Metrics,
        sealer: Sealer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._backend = store.backend
        self._files = files
        self._generation = generation
        self._keys = keys
        self._settings = settings
        self._metrics = metrics
        self._sealer = sealer
        self._clock = clock
        self._inputs: OrderedDict[str, asyncio.Task[list[InputLine]]] = OrderedDict()
        self._turn = 0

    async def run(self) -> None:
        """The workers, until cancelled."""
        async with asyncio.TaskGroup() as group:
            for number in range(self._settings.concurrency):
                group.create_task(self._work(), name=f"portico-batch-worker-{number}")

    async def _work(self) -> None:
        while True:
            try:
                busy = await self.step()
            except RedisUnavailable as exc:
                _log.warning("batch worker idle: redis unavailable (%s)", exc.reason)
                busy = False
            except Exception:
                _log.exception("batch worker step failed")
                busy = False
            if not busy:
                await asyncio.sleep(self._settings.poll_interval_s)

    async def step(self) -> bool:
        """Run one line or finalize one batch; False when there was nothing to do."""
        active = await self._backend.active(_ACTIVE_SCAN)
        if not active:
            return False
        self._turn += 1
        start = self._turn % len(active)
        for tenant, batch_id in active[start:] + active[:start]:
            code = await self._backend.claim(
                tenant, batch_id, self._clock(), self._settings.lease_s
            )
            if code >= 0:
                await self._run(tenant, batch_id, code)
                return True
            if code in (DONE, EXPIRED):
                await self._finalize(
                    tenant, batch_id, "expired" if code == EXPIRED else "completed"
                )
                return True
            if code == NOT_RUNNING:
                record = await self._backend.get(tenant, batch_id)
                if record is None or record["status"] in FINISHED:
                    await self._backend.retire(tenant, batch_id)
        return False

    def _context(self, batch: Batch, index: int) -> bytes:
        return f"batches:result:{batch.tenant}:{batch.id}:{index}".encode()

    async def _run(self, tenant: str, batch_id: str, index: int) -> None:
        batch = await self._store.load(tenant, batch_id)
        if batch is None:  # gone, or its record does not open: nothing can run it
            await self._backend.retire(tenant, batch_id)
            return
        try:
            await self._lines(batch)
        except NotFound:  # the input file was deleted (or expired) under the batch
            await self._finalize(tenant, batch_id, "failed", "input_file_not_found")
            return
        renewal = asyncio.create_task(self._renew(tenant, batch_id, index))
        try:
            outcome, ok = await self._answer(batch, index)
        except _Later as later:
            self._metrics.batch_lines.labels("retried").inc()
            await self._backend.hold(tenant, batch_id, index, self._clock() + later.after_s)
            return
        except asyncio.CancelledError:
            # Shutting down: the line goes back at once rather than when its lease ends.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._backend.hold(tenant, batch_id, index, self._clock()))
            raise
        finally:
            renewal.cancel()
        data = json.dumps(outcome, ensure_ascii=False, separators=(",", ":")).encode()
        stored = (b"1" if ok else b"0") + data
        if self._sealer is not None:
            stored = self._sealer.seal(stored, self._context(batch, index))
        counted = await self._backend.record(tenant, batch_id, index, stored, ok)
        result = ("completed" if ok else "failed") if counted else "duplicate"
        self._metrics.batch_lines.labels(result).inc()

    async def _renew(self, tenant: str, batch_id: str, index: int) -> None:
        lease = self._settings.lease_s
        while True:
            await asyncio.sleep(lease / 3)
            with contextlib.suppress(RedisUnavailable):
                await self._backend.hold(tenant, batch_id, index, self._clock() + lease)

    async def _lines(self, batch: Batch) -> list[InputLine]:
        """The batch's input, parsed once per replica while it runs (a bounded LRU)."""
        task = self._inputs.get(batch.id)
        if task is None or (task.done() and task.exception() is not None):

            async def load() -> list[InputLine]:
                return input_lines(await self._files.content(batch.owner.id, batch.input_file_id))

            task = asyncio.ensure_future(load())
            self._inputs[batch.id] = task
            while len(self._inputs) > self._settings.input_cache_batches:
                self._inputs.popitem(last=False)
        self._inputs.move_to_end(batch.id)
        return await asyncio.shield(task)

    async def _owner(self, batch: Batch) -> Principal | None:
        """The principal to run as now: an API key is read again (revoked, expired:
        None); any other principal is as it was when the batch was created."""
        if batch.owner.kind != "key":
            return batch.owner
        record = await self._keys.get(batch.owner.id)
        if record is None or not record.active(self._clock()):
            return None
        return principal_for_key(record)

    def _count_tokens(self, model: str) -> None:
        """What the HTTP middleware counts for a request, for a line (no middleware here)."""
        record = telemetry.current()
        if record.prompt_tokens is not None:
            self._metrics.prompt_tokens.labels(model).inc(record.prompt_tokens)
        if record.completion_tokens is not None:
            self._metrics.completion_tokens.labels(model).inc(record.completion_tokens)

    async def _answer(self, batch: Batch, index: int) -> tuple[dict[str, Any], bool]:
        """The line's result and whether it succeeded; ``_Later`` if refused for now."""
        line = (await self._lines(batch))[index]
        request_id = f"batch_req_{secrets.token_hex(16)}"
        telemetry.begin(request_id)
        owner = await self._owner(batch)
        if owner is None:
            refused = AuthenticationFailed(
                "The API key that created this batch is revoked or expired."
            )
            return result_line(line, request_id, refused.status_code, refused.body()), False
        try:
            parsed = await self._generation.validate(line.url, line.body, owner)
            call = Call(line.url, line.body, parsed, owner, request_id, batch=True)
            reply = await self._generation.respond(call)
        except RateLimited as exc:
            if "retry-after" in exc.headers:
                raise _Later(float(exc.headers["retry-after"])) from exc
            return result_line(line, request_id, exc.status_code, exc.body()), False
        except (EngineUnavailable, BackendUnavailable) as exc:
            if exc.code == "file_storage_full" or exc.status_code != 503:
                return result_line(line, request_id, exc.status_code, exc.body()), False
            raise _Later(self._settings.retry_s) from exc
        except GatewayError as exc:
            return result_line(line, request_id, exc.status_code, exc.body()), False
        self._count_tokens(parsed.model)
        body: Any = reply.body
        with contextlib.suppress(ValueError):
            body = json.loads(reply.body)
        return result_line(line, request_id, reply.status_code, body), reply.status_code < 300

    async def _finalize(
        self, tenant: str, batch_id: str, outcome: str, problem: str | None = None
    ) -> None:
        """Write the output and error files, then give the batch its final status. A
        replica that dies here leaves the batch ``finalizing``; after a lease another
        finalizes it again."""
        now = self._clock()
        taken = await self._backend.finalize(tenant, batch_id, now, self._settings.lease_s, outcome)
        batch = None if taken is None else await self._store.load(tenant, batch_id)
        if taken is None or batch is None:
            return
        fields: dict[str, str] = {}
        if problem is None:
            try:
                fields = await self._write_files(batch, taken)
            except NotFound:  # the input file went before the output was written
                problem = "input_file_not_found"
            except (InvalidRequest, BackendUnavailable) as exc:
                if isinstance(exc, RedisUnavailable):
                    raise  # transient: finalized again once the lease ends
                problem = exc.code or "file_storage_full"
        if problem is not None:
            taken = "failed"
            message = {
                "input_file_not_found": "The batch's input file was deleted before it ran.",
            }.get(problem, "The batch's results could not be stored: file storage is full.")
            fields["errors"] = json.dumps(
                [{"code": problem, "message": message, "param": None, "line": None}]
            )
        fields.update(status=taken, **{f"{taken}_at": str(int(self._clock()))})
        await self._backend.finish(tenant, batch_id, fields, self._store.keep_s)
        self._metrics.batches_finished.labels(taken).inc()

    async def _write_files(self, batch: Batch, outcome: str) -> dict[str, str]:
        """The output file (lines that succeeded) and the error file (the rest, and the
        lines an expired or cancelled batch never ran), in input order."""
        lines = await self._lines(batch)
        results = await self._backend.results(batch.tenant, batch.id)
        output: list[bytes] = []
        errors: list[bytes] = []
        for index, line in enumerate(lines):
            stored = results.get(index)
            if stored is not None and self._sealer is not None:
                stored = self._sealer.open(stored, self._context(batch, index))
            if stored is None:
                code = "batch_expired" if outcome == "expired" else "batch_cancelled"
                unrun = _unrun_line(line, code, f"The line was not run: the batch was {outcome}.")
                errors.append(json.dumps(unrun, ensure_ascii=False).encode())
                continue
            (output if stored[:1] == b"1" else errors).append(stored[1:])
        fields = {"completed": str(len(output)), "failed": str(len(errors))}
        for name, kept in (("output", output), ("error", errors)):
            if kept:
                file = await self._files.keep(
                    batch.owner.id, "batch_output", f"{batch.id}_{name}.jsonl",
                    b"\n".join(kept) + b"\n",
                )  # fmt: skip
                fields[f"{name}_file_id"] = file["id"]
        return fields
