"""``/v1/batches``: the OpenAI Batch API (create, retrieve, list, cancel), each route
scoped to its caller; the store is :mod:`gateway.batches`, the runner
:mod:`gateway.batch_runner`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from gateway.api import PrincipalDep
from gateway.batches import BatchCreate
from gateway.body import parse, read_body
from gateway.resources import ResourcesDep

batches = APIRouter(prefix="/v1/batches")


@batches.post("")
async def create_batch(
    request: Request, resources: ResourcesDep, who: PrincipalDep
) -> dict[str, Any]:
    """Queue a batch (``client.batches.create``); every input line is checked first.
    The body is read by hand once the caller is authenticated (gateway/body.py)."""
    create = parse(BatchCreate, await read_body(request))
    return await resources.batches.create(who, create, resources.generation.validate)


@batches.get("")
async def list_batches(
    resources: ResourcesDep,
    who: PrincipalDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """This caller's batches, newest first (``client.batches.list``)."""
    return await resources.batches.list(who.id, after, limit)


@batches.get("/{batch_id}")
async def retrieve_batch(batch_id: str, resources: ResourcesDep, who: PrincipalDep) -> Any:
    """One of this caller's batches; another caller's is the same 404 as none."""
    return await resources.batches.retrieve(who.id, batch_id)


@batches.post("/{batch_id}/cancel")
async def cancel_batch(batch_id: str, resources: ResourcesDep, who: PrincipalDep) -> Any:
    """Stop the batch: no new lines start; finished ones are kept in its output."""
    return await resources.batches.cancel(who.id, batch_id)
