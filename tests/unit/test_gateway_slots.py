"""gateway/slots.py: the one owner of engine slots and of the requests waiting for one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.errors import EngineUnavailable
from gateway.metrics import Metrics
from gateway.settings import RoutingSettings
from gateway.slots import Slots


class Node:
    """An engine as Slots sees it: a name and an in-flight count with a cap of one."""

    def __init__(self, name: str = "engine-0") -> None:
        self.name = name
        self.in_flight = 0
        self.suspected = 0

    def acquire(self) -> None:
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    def suspect(self) -> None:
        self.suspected += 1


def _slots(**settings: Any) -> tuple[Slots, Metrics]:
    metrics = Metrics()
    return Slots(RoutingSettings(**settings), metrics), metrics


def _free(node: Node) -> Any:
    return lambda: node if node.in_flight == 0 else None


def _rejections(metrics: Metrics, reason: str) -> float:
    return metrics.backpressure_rejections.labels(reason)._value.get()


def test_waiters_are_served_in_arrival_order_and_newcomers_do_not_overtake() -> None:
    async def scenario() -> list[str]:
        slots, _ = _slots(queue_wait_s=5)
        node = Node()
        first = await slots.acquire(_free(node))  # the only slot
        served: list[str] = []

        async def wait(name: str) -> None:
            lease = await slots.acquire(_free(node))
            served.append(name)
            await asyncio.sleep(0.01)
            lease.release()

        waiters = [asyncio.create_task(wait(f"w{i}")) for i in range(3)]
        await asyncio.sleep(0.01)  # all three queued
        assert slots.waiting == 3
        first.release()
        # Arrives after the release but before the first waiter ran: must queue behind.
        late = asyncio.create_task(wait("late"))
        await asyncio.gather(*waiters, late)
        assert slots.waiting == 0
        assert node.in_flight == 0
        return served

    assert asyncio.run(scenario()) == ["w0", "w1", "w2", "late"]


def test_a_full_queue_and_a_long_wait_are_503s_counted_by_reason() -> None:
    async def scenario() -> tuple[Slots, Metrics]:
        slots, metrics = _slots(queue_size=1, queue_wait_s=0.1)
        node = Node()
        held = await slots.acquire(_free(node))
        waiter = asyncio.create_task(slots.acquire(_free(node)))
        await asyncio.sleep(0.01)
        with pytest.raises(EngineUnavailable) as full:
            await slots.acquire(_free(node))
        assert full.value.headers["retry-after"] == "1"
        with pytest.raises(EngineUnavailable, match="stayed at capacity"):
            await waiter
        held.release()
        return slots, metrics

    slots, metrics = asyncio.run(scenario())
    assert slots.waiting == 0
    assert _rejections(metrics, "queue_full") == 1
    assert _rejections(metrics, "queue_timeout") == 1


def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_gets_the_slot() -> None:
    async def scenario() -> Node:
        slots, _ = _slots(queue_wait_s=5)
        node = Node()
        held = await slots.acquire(_free(node))
        gone = asyncio.create_task(slots.acquire(_free(node)))
        kept = asyncio.create_task(slots.acquire(_free(node)))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        assert slots.waiting == 1
        held.release()
        lease = await asyncio.wait_for(kept, 1)
        lease.release()
        lease.release()  # idempotent: the count does not go below zero
        return node

    assert asyncio.run(scenario()).in_flight == 0


def test_a_pick_that_raises_passes_through_and_a_suspect_release_reaches_the_engine() -> None:
    async def scenario() -> Node:
        slots, _ = _slots()
        node = Node()

        def refuse() -> None:
            raise EngineUnavailable("No engine serving this model is available.")

        with pytest.raises(EngineUnavailable, match="No engine"):
            await slots.acquire(refuse)
        lease = await slots.acquire(_free(node))
        lease.release(suspect=True)
        return node

    node = asyncio.run(scenario())
    assert node.suspected == 1
    assert node.in_flight == 0


def test_batch_work_waits_behind_every_interactive_waiter() -> None:
    """Batch lines queued first are still served after interactive requests that
    arrive later; and a batch line does not take a free slot while one waits."""

    async def scenario() -> list[str]:
        slots, _ = _slots(queue_wait_s=5)
        node = Node()
        first = await slots.acquire(_free(node))  # the only slot
        served: list[str] = []

        async def wait(name: str, low: bool) -> None:
            lease = await slots.acquire(_free(node), low)
            served.append(name)
            await asyncio.sleep(0.01)
            lease.release()

        batch = [asyncio.create_task(wait(f"batch{i}", True)) for i in range(2)]
        await asyncio.sleep(0.01)
        interactive = [asyncio.create_task(wait(f"user{i}", False)) for i in range(2)]
        await asyncio.sleep(0.01)
        assert slots.waiting == 2  # the interactive queue; batch work waits in its own
        first.release()
        await asyncio.gather(*batch, *interactive)
        return served

    assert asyncio.run(scenario()) == ["user0", "user1", "batch0", "batch1"]


def test_a_batch_line_alone_takes_a_free_slot_at_once() -> None:
    async def scenario() -> int:
        slots, _ = _slots(queue_wait_s=5)
        node = Node()
        lease = await asyncio.wait_for(slots.acquire(_free(node), low=True), 1)
        lease.release()
        return node.in_flight

    assert asyncio.run(scenario()) == 0
