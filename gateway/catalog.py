"""The models the engines serve, as the gateway last heard them.

Requests for a model no engine in rotation serves are refused here (404)
without forwarding. Model lists are re-read at most every ``refresh_s``
seconds, and at once when a request names a model the cached union lacks (an
engine may have been restarted with another model), so a typo cannot make the
gateway hammer the engines: misses share the same rate limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from gateway.engines import EnginePool
from gateway.errors import EngineUnavailable, NotFound


class ModelCatalog:
    def __init__(self, pool: EnginePool, refresh_s: float) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def listing(self) -> dict[str, Any]:
        """The union of the engines' /v1/models bodies, refreshed when stale."""
        if self._stale():
            await self._refresh()
        return self._pool.listing()

    async def refresh_now(self) -> dict[str, Any]:
        """Re-read every engine's model list at once (an operator's request, not rate
        limited like the misses are); the new listing. EngineUnavailable if none answered."""
        async with self._lock:
            try:
                await self._pool.refresh_models()
            finally:
                self._fetched_at = time.monotonic()
        return self._pool.listing()

    async def require(self, model: str) -> None:
        """Return if an engine in rotation serves ``model``; raise NotFound otherwise."""
        if self.known(model) and not self._stale():
            return
        if self._stale(min_age=1.0):
            with contextlib.suppress(EngineUnavailable):  # judged below from what is known
                await self._refresh()
        if self.known(model):
            return
        if self._pool.ever_served(model) or not self._pool.ever_served():
            # Known but every engine serving it is out (or no engine ever answered):
            # the model exists, the engines are down.
            raise EngineUnavailable(
                "No engine serving this model is available; retry shortly.",
                headers={"retry-after": "1"},
            )
        raise model_not_found(model)

    def context_length(self, model: str) -> int | None:
        """The model's context length as its engines reported it (vLLM's ``max_model_len``)."""
        return self._pool.context_length(model)

    def known(self, model: str) -> bool:
        """Whether an engine in rotation serves ``model`` (also bounds metric labels)."""
        return bool(self._pool.candidates(model))

    def _stale(self, min_age: float | None = None) -> bool:
        age = time.monotonic() - self._fetched_at
        return age >= (self._refresh_s if min_age is None else min_age)

    async def _refresh(self) -> None:
        async with self._lock:
            if not self._stale(min_age=1.0):
                return  # another request refreshed while we waited
            try:
                await self._pool.refresh_models()
            finally:
                # Failed refreshes are rate-limited too: a dead engine is not asked
                # again by every request.
                self._fetched_at = time.monotonic()


def model_not_found(model: str) -> NotFound:
    """OpenAI's 404 for a model that does not exist or that the caller may not see."""
    return NotFound(
        f"The model '{model[:200]}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )
