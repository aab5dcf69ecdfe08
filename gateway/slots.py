"""Engine slots and the requests waiting for one: the one owner of both.

An engine takes at most ``max_in_flight`` requests (the router's cap). A request
that finds every engine serving its model at the cap waits here, in arrival
order, at most ``queue_size`` of them and each at most ``queue_wait_s``; past
either bound it is refused (503 with Retry-After, never a hang). A request that
arrives while others wait joins the queue behind them instead of taking a slot
that was freed for them.

Every release wakes the waiters in queue order; each asks the router again (one
may want a model whose engines are still full), and the first that finds a slot
takes it. Waking is synchronous (an event set), so a release from a stream's end
needs no task of its own. This is where priority tiers and per-tenant fairness
go: they change the order of ``_waiters``, not routing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from gateway.engines import EngineNode
from gateway.errors import EngineUnavailable
from gateway.metrics import Metrics
from gateway.settings import RoutingSettings

Pick = Callable[[], EngineNode | None]  # the engine to use now; None: all at their cap


class Lease:
    """One slot on one engine, held until the answer ends; ``release`` is idempotent."""

    def __init__(self, slots: Slots, node: EngineNode) -> None:
        self._slots = slots
        self.node = node
        self._held = True
        node.acquire()

    def release(self, suspect: bool = False) -> None:
        """Give the slot back; ``suspect``: the answer failed in a way that may be the
        engine's fault (its /health decides)."""
        if not self._held:
            return
        self._held = False
        self.node.release()
        if suspect:
            self.node.suspect()
        self._slots.wake()


class Slots:
    def __init__(self, settings: RoutingSettings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._waiters: deque[asyncio.Event] = deque()
        self._low: deque[asyncio.Event] = deque()  # batch work: after every interactive waiter

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, pick: Pick, low: bool = False) -> Lease:
        """A slot on the engine ``pick`` names, waiting (bounded) while it names none.
        ``pick`` may raise (no engine serves the model): the error passes through.
        ``low`` (batch work) takes a slot only while no interactive request waits."""
        started = time.monotonic()
        queue = self._low if low else self._waiters
        if not self._waiters and not queue:
            # Nobody is queued, so nobody is overtaken.
            node = pick()
            if node is not None:
                return self._lease(node, 0.0)
        if len(queue) >= self._settings.queue_size:
            raise self._refuse("queue_full", "All engines are at capacity.")
        turn = asyncio.Event()
        queue.append(turn)
        try:
            return await self._wait_for_slot(turn, pick, started, low)
        finally:
            queue.remove(turn)
            if self._waiters or self._low:
                self.wake()  # a slot this waiter was woken for may fit the next one

    async def _wait_for_slot(
        self, turn: asyncio.Event, pick: Pick, started: float, low: bool
    ) -> Lease:
        deadline = started + self._settings.queue_wait_s
        while True:
            node = None if low and self._waiters else pick()
            if node is not None:
                return self._lease(node, time.monotonic() - started)
            turn.clear()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await turn.wait()
            except TimeoutError:
                raise self._refuse("queue_timeout", "All engines stayed at capacity.") from None

    def wake(self) -> None:
        """A slot was freed: every waiter asks again, in queue order; batch work only
        when no interactive request waits."""
        for turn in self._waiters or self._low:
            turn.set()

    def _lease(self, node: EngineNode, waited_s: float) -> Lease:
        self._metrics.engine_queue_wait.labels(node.name).observe(waited_s)
        return Lease(self, node)

    def _refuse(self, reason: str, message: str) -> EngineUnavailable:
        return refusal(self._metrics, reason, message)


def refusal(metrics: Metrics, reason: str, message: str) -> EngineUnavailable:
    """A 503 for a request no engine can take now, counted by ``reason``."""
    metrics.backpressure_rejections.labels(reason).inc()
    return EngineUnavailable(message + " Retry shortly.", headers={"retry-after": "1"})
