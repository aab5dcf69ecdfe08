"""The models the engine serves, as the gateway last heard them.

Requests for a model the engine does not serve are refused here (404) without
forwarding. The list is re-read at most every ``refresh_s`` seconds, and at
once when a request names a model the cached list lacks (an engine may have
been restarted with another model), so a typo cannot make the gateway hammer
the engine: misses share the same rate limit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.errors import EngineUnavailable, NotFound
from gateway.upstream import Engine


class ModelCatalog:
    def __init__(self, engine: Engine, refresh_s: float) -> None:
        self._engine = engine
        self._refresh_s = refresh_s
        self._listing: dict[str, Any] | None = None
        self._ids: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def listing(self) -> dict[str, Any]:
        """The engine's /v1/models body, refreshed when stale."""
        if self._stale():
            await self._refresh()
        assert self._listing is not None  # _refresh sets it or raises
        return self._listing

    async def require(self, model: str) -> None:
        """Return if the engine serves ``model``; raise NotFound otherwise."""
        if model in self._ids and not self._stale():
            return
        if self._stale(min_age=1.0) or self._listing is None:
            await self._refresh()
        if model not in self._ids:
            raise NotFound(
                f"The model '{model[:200]}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )

    def known(self, model: str) -> bool:
        """Whether ``model`` is in the last listing (used to bound metric labels)."""
        return model in self._ids

    def _stale(self, min_age: float | None = None) -> bool:
        age = time.monotonic() - self._fetched_at
        return age >= (self._refresh_s if min_age is None else min_age)

    async def _refresh(self) -> None:
        async with self._lock:
            if self._listing is not None and not self._stale(min_age=1.0):
                return  # another request refreshed while we waited
            listing = await self._engine.get_json("/v1/models")
            data = listing.get("data") if isinstance(listing, dict) else None
            if not isinstance(data, list):
                raise EngineUnavailable("Engine returned a malformed model list.")
            self._listing = listing
            self._ids = frozenset(str(m.get("id")) for m in data if isinstance(m, dict))
            self._fetched_at = time.monotonic()
