"""Choosing an engine for a request, waiting for one, and failing over before the first byte.

Choice: requests with an affinity key (a session header, the ``user`` field, or
the start of the prompt) go to the engine that key hashes to, so vLLM's
automatic prefix cache hits on the shared prefix. Hashing is rendezvous
(highest random weight) hashing, a consistent hash without a ring: adding or
losing an engine moves only the keys that hashed to it. It is bounded-load: an
engine is skipped for a key while it has more than ``affinity_load_factor``
times the average outstanding requests, so one hot prefix spills over instead
of overloading its engine. Requests without a key go to the engine with the
fewest outstanding requests. ``strategy`` can turn affinity off (least
outstanding for all) or use plain round-robin, the baseline of bench/.

Backpressure: an engine takes at most ``max_in_flight`` requests. Beyond that a
request waits (at most ``queue_size`` of them, at most ``queue_wait_s`` each),
then gets 503 with Retry-After, never a hang. 429 stays the client's own limits.

Retries: only before anything was sent to the client, only after a connection
failure, an engine 503, or an engine 5xx followed by a failed /health (vLLM's 500
for the requests it held when its engine core died), on another engine, at most
``retries`` times.

Health: a refused or dropped connection counts against the engine's breaker; a
timeout or a 5xx only makes it suspect (see ``gateway.engines``), because a
tenant's own request can cause either.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Mapping

from gateway.engines import EngineNode, EnginePool
from gateway.errors import (
    EngineBusy,
    EngineRejected,
    EngineTimeout,
    EngineUnavailable,
    UpstreamError,
)
from gateway.metrics import Metrics
from gateway.protocol import (
    APIRequest,
    ChatCompletionRequest,
    EmbeddingRequest,
    ResponsesRequest,
)
from gateway.settings import RoutingSettings
from gateway.slots import Lease, Slots, refusal
from gateway.upstream import Answer


class EngineCall:
    """One request's answer from one engine and the slot it holds there. ``close`` is
    idempotent and must run in every outcome: it closes the answer and frees the slot."""

    def __init__(self, answer: Answer, lease: Lease) -> None:
        self._answer = answer
        self._lease = lease
        self._engine = lease.node.engine
        self.status_code = answer.status_code
        self.headers = answer.headers

    async def read(self) -> bytes:
        return await self._engine.read(self._answer)

    def chunks(self) -> AsyncIterator[bytes]:
        return self._engine.chunks(self._answer)

    def broke(self) -> None:
        """The engine broke the stream after its first byte (counted per engine)."""
        self._engine.broke()

    async def close(self, suspect: bool = False) -> None:
        """``suspect``: the answer failed in a way that may be the engine's fault."""
        self._lease.release(suspect=suspect)
        await self._answer.aclose()


def affinity_key(request: APIRequest, session: str | None, prefix_chars: int) -> str | None:
    """What ties a request to an engine: its session, else the start of its prompt."""
    if session:
        return "session:" + session[:256]
    if request.user:
        return "user:" + request.user[:256]
    if prefix_chars == 0 or isinstance(request, EmbeddingRequest):
        return None  # an encoder keeps no prefix cache worth returning to
    if isinstance(request, ChatCompletionRequest):
        parts = [f"{m.role}:{m.content}" for m in request.messages]
        text = "\n".join(parts)
    elif isinstance(request, ResponsesRequest):
        # A follow-up's input starts with the conversation it continues: its turns
        # return to the engine that holds that prefix.
        text = f"{request.instructions}\n{request.input}"
    else:
        text = str(request.prompt)
    return "prefix:" + text[:prefix_chars]


def _weight(key: str, url: str) -> bytes:
    return hashlib.blake2b(f"{key}|{url}".encode(), digest_size=8).digest()


class Router:
    def __init__(self, pool: EnginePool, settings: RoutingSettings, metrics: Metrics) -> None:
        self._pool = pool
        self._slots = Slots(settings, metrics)
        self._settings = settings
        self._metrics = metrics
        self._turn = 0  # rotates ties between equally loaded engines

    def choose(self, nodes: list[EngineNode], key: str | None) -> EngineNode | None:
        """The engine for ``key`` among ``nodes``, or None when all are at their cap."""
        cap = self._settings.max_in_flight
        open_nodes = [n for n in nodes if n.in_flight < cap]
        if not open_nodes:
            return None
        strategy = self._settings.strategy
        if strategy == "round_robin":
            self._turn += 1
            return open_nodes[self._turn % len(open_nodes)]
        if key is not None and strategy == "affinity":
            total = sum(n.in_flight for n in nodes) + 1
            bound = math.ceil(self._settings.affinity_load_factor * total / len(nodes))
            for node in sorted(nodes, key=lambda n: _weight(key, n.url), reverse=True):
                if node.in_flight < min(cap, bound):
                    return node
        self._turn += 1
        start = self._turn % len(open_nodes)
        rotated = open_nodes[start:] + open_nodes[:start]
        return min(rotated, key=lambda n: n.in_flight)

    async def acquire(
        self, model: str, key: str | None, tried: set[str], low: bool = False
    ) -> Lease:
        """A slot on an engine serving ``model`` not in ``tried``, waiting if all are full
        (``low``: batch work, behind every interactive request)."""
        return await self._slots.acquire(lambda: self._pick(model, key, tried), low)

    def _pick(self, model: str, key: str | None, tried: set[str]) -> EngineNode | None:
        """The engine to use now, None if all are at their cap; refuses if none serves."""
        nodes = [n for n in self._pool.candidates(model) if n.url not in tried]
        if not nodes:
            raise refusal(self._metrics, "no_engine", "No engine serving this model is available.")
        return self.choose(nodes, key)

    async def open(
        self, request: APIRequest, key: str | None, path: str, body: bytes,
        headers: Mapping[str, str], low: bool = False,
    ) -> EngineCall:  # fmt: skip
        """Send to a chosen engine; fail over before the first byte within the budget.
        The caller owns the returned call and must ``close`` it."""
        tried: set[str] = set()
        while True:
            lease = await self.acquire(request.model, key, tried, low)
            try:
                response = await lease.node.engine.open(path, body, headers, request.stream)
            except UpstreamError as exc:
                retry = await _settle_failure(lease, exc)
                tried.add(lease.node.url)
                if (
                    not retry
                    or len(tried) > self._settings.retries
                    or not self._others(request.model, tried)
                ):
                    raise
                self._metrics.engine_retries.labels(lease.node.name).inc()
                continue
            lease.node.succeeded()
            return EngineCall(response, lease)

    def _others(self, model: str, tried: set[str]) -> bool:
        return any(n.url not in tried for n in self._pool.candidates(model))


async def _settle_failure(lease: Lease, exc: UpstreamError) -> bool:
    """Release a lease whose engine failed before answering; True if a retry may help."""
    if isinstance(exc, EngineBusy):
        lease.release()  # overloaded, not broken: the circuit stays closed
        return True
    if isinstance(exc, EngineUnavailable):
        lease.release()
        lease.node.failed()  # refused, reset, dropped before the headers: the engine's own
        return True
    if isinstance(exc, EngineRejected) and exc.status_code >= 500:
        # The request's fault (a body that trips the engine) or the engine's (its core
        # died under it: vLLM answers 500 to what it held). Its /health tells them
        # apart; a dead engine's request is resent, as nothing reached the client yet.
        lease.release()
        return not await lease.node.verify()
    # A timeout may mean the engine is still working on it: never resent, and it may be
    # the request's own length: /health decides. A 4xx is the request's fault.
    lease.release(suspect=isinstance(exc, EngineTimeout))
    return False
