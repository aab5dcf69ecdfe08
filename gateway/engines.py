"""The engines behind the gateway: what each serves, how busy it is, whether it is healthy.

Health is judged from signals the engine owns, never from what one request's
body or length can provoke. Actively, a background task asks every engine's
``/health`` each ``health_interval_s`` (and its ``/v1/models`` while its model
list is unknown). Passively, a connection the engine refuses or drops before
answering counts as a failure at once. A request that ends in a timeout, a 5xx or
a stream cut mid-answer only makes the engine *suspect*: its ``/health`` is asked
right away, and only a failed answer counts. A tenant can make its own requests
run long (a large ``max_tokens``) or make vLLM fail them (a body that trips an
engine bug); if those counted, three such requests would take an engine out of
rotation for every tenant. After ``breaker_failures`` consecutive failures an
engine's circuit opens and it gets no traffic; once ``breaker_reset_s`` has
passed, the next active check is the half-open probe, and one success puts the
engine back. An engine's own 503 means "my queue is full", not "I am broken", so
it does not count against the circuit.

All state here is a fixed amount per engine: memory stays bounded whatever the
traffic. Engines come from ``gateway.discovery``: fixed URLs, or DNS names
resolved again every ``dns_refresh_s`` (a Kubernetes headless Service).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

from gateway.discovery import Discovery
from gateway.errors import EngineUnavailable
from gateway.metrics import Metrics
from gateway.settings import RoutingSettings, UpstreamTimeouts
from gateway.upstream import Engine, Transport

_log = logging.getLogger("portico.engines")
_MAX_VERSION = 64  # characters of an engine's version string relayed, at most


class Breaker:
    """A circuit breaker counting consecutive failures (closed → open → half-open)."""

    def __init__(self, failures: int, reset_s: float) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def closed(self) -> bool:
        return self._opened_at is None

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        """``half_open``: open, and the next active check is the probe."""
        if self._opened_at is None:
            return "closed"
        return "half_open" if self.probe_due() else "open"

    def probe_due(self) -> bool:
        """Closed, or open long enough that a half-open probe may be tried."""
        return self._opened_at is None or time.monotonic() - self._opened_at >= self._reset_s

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def failure(self) -> bool:
        """Count a failure; True when this one opened (or re-opened) the circuit."""
        self._failures += 1
        if self._failures >= self._threshold:
            was_closed = self._opened_at is None
            self._opened_at = time.monotonic()  # a failed half-open probe restarts the wait
            return was_closed
        return False


class EngineNode:
    """One configured engine: its client, its models, its load and its breaker."""

    def __init__(self, engine: Engine, routing: RoutingSettings, metrics: Metrics) -> None:
        self.engine = engine
        self.url = engine.base_url
        self.name = engine.name
        self.models: dict[str, dict[str, Any]] = {}  # id -> the engine's model entry
        self.in_flight = 0
        self.breaker = Breaker(routing.breaker_failures, routing.breaker_reset_s)
        # Set by an operator (gateway/engine_admin.py): no new requests are routed here;
        # those already on it finish. Health checks go on, so undrain is instant.
        self.drained = False
        self._version: tuple[str | None, float] | None = None  # (vLLM version, when asked)
        self._version_lock = asyncio.Lock()
        self._in_flight_gauge = metrics.engine_in_flight.labels(self.name)
        self._healthy_gauge = metrics.engine_healthy.labels(self.name)
        self._healthy_gauge.set(1)
        self._verifying: asyncio.Task[bool] | None = None  # the suspect check running

    @property
    def available(self) -> bool:
        """In rotation: healthy and not drained."""
        return self.breaker.closed and not self.drained

    def serves(self, model: str) -> bool:
        return model in self.models

    def acquire(self) -> None:
        self.in_flight += 1
        self._in_flight_gauge.inc()

    def release(self) -> None:
        self.in_flight -= 1
        self._in_flight_gauge.dec()

    def succeeded(self) -> None:
        if not self.breaker.closed:
            _log.warning("engine %s is back in rotation", self.url)
        self.breaker.success()
        self._healthy_gauge.set(1)

    def failed(self) -> None:
        if self.breaker.failure():
            _log.warning("engine %s taken out of rotation", self.url)
        if not self.breaker.closed:
            self._healthy_gauge.set(0)

    def suspect(self) -> None:
        """A request failed in a way its own body or length could have caused: ask the
        engine's /health now (one check at a time) and count a failure only if that
        fails. Called from request paths, which must not wait for it."""
        if self._verifying is None or self._verifying.done():
            self._verifying = asyncio.get_running_loop().create_task(self.verify())

    async def verify(self) -> bool:
        """Ask /health now; a failed answer counts against the breaker. True if healthy."""
        try:
            await self.engine.get_json("/health")
        except EngineUnavailable:
            self.failed()
            return False
        return True

    def stop(self) -> None:
        """Cancel a suspect check still running (the lifespan's end)."""
        if self._verifying is not None:
            self._verifying.cancel()

    def context_length(self, model: str) -> int | None:
        """The ``max_model_len`` this engine reported for ``model``, if any."""
        value = self.models.get(model, {}).get("max_model_len")
        return value if isinstance(value, int) and value > 0 else None

    async def fetch_models(self) -> None:
        """Read the engine's /v1/models; any failure counts against its breaker."""
        try:
            listing = await self.engine.get_json("/v1/models")
        except EngineUnavailable:
            self.failed()
            raise
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            self.failed()
            raise EngineUnavailable("Engine returned a malformed model list.")
        self.models = {str(m.get("id")): m for m in data if isinstance(m, dict)}
        self.succeeded()

    async def vllm_version(self, max_age_s: float) -> str | None:
        """The engine's vLLM version (its ``GET /version``), asked at most once per
        ``max_age_s`` whoever calls; None when it cannot say. Never counts against
        the breaker: the caller may be anyone."""
        async with self._version_lock:  # concurrent callers share one engine request
            if self._version is not None and time.monotonic() - self._version[1] < max_age_s:
                return self._version[0]
            try:
                answer = await self.engine.get_json("/version")
            except EngineUnavailable:
                answer = None
            version = answer.get("version") if isinstance(answer, dict) else None
            valid = isinstance(version, str) and 0 < len(version) <= _MAX_VERSION
            self._version = (version if valid else None, time.monotonic())
            return self._version[0]

    async def check(self) -> None:
        """One active check: /health, plus the model list while it is unknown."""
        try:
            await self.engine.get_json("/health")
            if not self.models:
                await self.fetch_models()
        except EngineUnavailable:
            self.failed()
            return
        self.succeeded()


class EnginePool:
    """Every engine, the background task that checks them, and (for ``dns+`` entries)
    the periodic resolution that adds and drops them."""

    def __init__(
        self,
        transport: Transport,
        discovery: Discovery,
        timeouts: UpstreamTimeouts,
        routing: RoutingSettings,
        metrics: Metrics,
    ) -> None:
        self._transport = transport
        self._discovery = discovery
        self._timeouts = timeouts
        self._routing = routing
        self._metrics = metrics
        self.nodes: list[EngineNode] = []
        self._set_urls(discovery.static_urls())  # DNS entries join at the first discover()
        self._interval_s = routing.health_interval_s

    async def discover(self) -> None:
        """Resolve the DNS entries again: new addresses join, vanished ones leave."""
        self._set_urls(await self._discovery.urls())

    def _set_urls(self, named: Mapping[str, str]) -> None:
        """Make the pool the engines of ``named`` (URL -> name)."""
        current = {n.url: n for n in self.nodes}
        nodes = [
            current.get(url)
            or EngineNode(Engine(self._transport, url, name, self._timeouts, self._metrics),
                          self._routing, self._metrics)
            for url, name in named.items()
        ]  # fmt: skip
        for gone in current.keys() - named.keys():
            # Requests already on it hold their lease on the node object and finish.
            _log.warning("engine %s (%s) left the pool", current[gone].name, gone)
            self._metrics.forget_engine(current[gone].name)
        for node in nodes:
            if node.url not in current:
                _log.info("engine %s is %s", node.name, node.url)
        self.nodes = nodes

    def node(self, name: str) -> EngineNode | None:
        """The engine named ``name`` (``engine-<i>``, gateway/discovery.py), if any."""
        return next((n for n in self.nodes if n.name == name), None)

    def candidates(self, model: str) -> list[EngineNode]:
        """Engines in rotation that serve ``model``, in configuration order."""
        return [n for n in self.nodes if n.available and n.serves(model)]

    def ever_served(self, model: str | None = None) -> bool:
        """Whether any engine, in rotation or not, listed ``model`` (or any model)."""
        return any(n.models and (model is None or n.serves(model)) for n in self.nodes)

    def context_length(self, model: str) -> int | None:
        """The smallest context length any engine reported for ``model``, if any did."""
        lengths = [n for node in self.nodes if (n := node.context_length(model)) is not None]
        return min(lengths, default=None)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def outstanding(self) -> int:
        return sum(n.in_flight for n in self.nodes)

    async def refresh_models(self) -> None:
        """Re-read every due engine's model list at once; raise if none answered."""
        due = [n for n in self.nodes if n.breaker.probe_due()]
        results = await asyncio.gather(*(n.fetch_models() for n in due), return_exceptions=True)
        if not any(r is None for r in results):
            raise EngineUnavailable("No engine answered its model list.")

    def listing(self) -> dict[str, Any]:
        """The union of what engines in rotation serve, in the engines' own format."""
        union: dict[str, dict[str, Any]] = {}
        for node in self.nodes:
            if node.available:
                for model_id, entry in node.models.items():
                    union.setdefault(model_id, entry)
        return {"object": "list", "data": list(union.values())}

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready when every model an engine not drained has served has an engine in
        rotation. A drained engine's models are not required (an operator chose to take
        it out), so draining the last engine of one model does not take the whole
        gateway out of its load balancer; draining every engine does."""
        known = {m for n in self.nodes if not n.drained for m in n.models}
        uncovered = sorted(m for m in known if not self.candidates(m))
        return bool(known) and not uncovered, uncovered

    async def check_forever(self) -> None:
        """The active health check loop (and DNS refresh); the lifespan cancels it."""
        next_discovery = 0.0
        while True:
            if self._discovery.dynamic and time.monotonic() >= next_discovery:
                await self.discover()
                next_discovery = time.monotonic() + self._routing.dns_refresh_s
            due = [n for n in self.nodes if n.breaker.probe_due()]
            await asyncio.gather(*(n.check() for n in due))
            await asyncio.sleep(self._interval_s)
