"""``/admin/engines`` and ``/admin/models/refresh``: the operator's engine operations,
all needing the ``model_admin`` permission (gateway/admin_auth.py).

- ``GET /admin/engines``: each engine's name, URL, models, health, breaker state,
  drain flag and requests in flight.
- ``POST /admin/engines/{name}/drain``: no new requests are routed to the engine; the
  ones on it finish. ``.../undrain`` puts it back at once (its health checks never stopped).
- ``POST /admin/models/refresh``: re-read every engine's model list now.

An engine is named in the path by the gateway's own name for it (``engine-<i>``,
gateway/discovery.py), looked up among the configured engines: the name never
becomes part of a URL, so the path cannot point the gateway anywhere new.

The state is this process's: with several gateway replicas, a drain is sent to each.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter

from gateway.admin_auth import requires
from gateway.auth import Principal
from gateway.engines import EngineNode, EnginePool
from gateway.errors import NotFound
from gateway.permissions import Permission
from gateway.resources import ResourcesDep

_log = logging.getLogger("portico.engines")

engines = APIRouter()

ModelAdmin = Annotated[Principal, requires(Permission.MODEL_ADMIN)]


def describe(node: EngineNode) -> dict[str, Any]:
    """What an operator sees of one engine."""
    return {
        "name": node.name,
        "url": node.url,
        "models": sorted(node.models),
        "healthy": node.breaker.closed,
        "breaker": node.breaker.state,
        "drained": node.drained,
        "in_flight": node.in_flight,
    }


def set_drained(pool: EnginePool, name: str, drained: bool, by: str) -> dict[str, Any]:
    """Drain or undrain the engine named ``name``; NotFound (404) if there is none."""
    node = pool.node(name)
    if node is None:
        raise NotFound(f"No engine named '{name[:64]}'.", param="name", code="engine_not_found")
    node.drained = drained
    _log.warning("engine %s %s by %s", node.name, "drained" if drained else "undrained", by)
    return describe(node)


@engines.get("/engines")
async def list_engines(_: ModelAdmin, resources: ResourcesDep) -> dict[str, Any]:
    return {"object": "list", "data": [describe(n) for n in resources.pool.nodes]}


@engines.post("/engines/{name}/drain")
async def drain_engine(name: str, caller: ModelAdmin, resources: ResourcesDep) -> dict[str, Any]:
    return set_drained(resources.pool, name, True, caller.id)


@engines.post("/engines/{name}/undrain")
async def undrain_engine(name: str, caller: ModelAdmin, resources: ResourcesDep) -> dict[str, Any]:
    return set_drained(resources.pool, name, False, caller.id)


@engines.post("/models/refresh")
async def refresh_models(_: ModelAdmin, resources: ResourcesDep) -> dict[str, Any]:
    return await resources.catalog.refresh_now()
