"""The Redis guard's timeout: it measures Redis, not this process's event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.errors import RedisUnavailable
from gateway.metrics import Metrics
from gateway.redis_guard import LoopLag, RedisGuard
from gateway.settings import RedisSettings

TIMEOUT_S = 0.05


async def _guard() -> tuple[RedisGuard, asyncio.Task[None]]:
    lag = LoopLag()
    monitor = asyncio.create_task(lag.run())
    await asyncio.sleep(0.05)  # a few calm ticks
    guard = RedisGuard(None, RedisSettings(timeout_s=TIMEOUT_S), Metrics(), lag)  # type: ignore[arg-type]
    return guard, monitor


def _block_loop(seconds: float) -> None:
    time.sleep(seconds)  # what a burst of CPU-bound work does to the loop


def test_a_stalled_call_fails_within_the_timeout_on_a_calm_loop() -> None:
    async def scenario() -> float:
        guard, monitor = await _guard()
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await guard.call(lambda _: asyncio.Event().wait())  # never answers
        monitor.cancel()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 4 * TIMEOUT_S


def test_a_loop_stall_before_the_call_does_not_stretch_its_timeout() -> None:
    """A busy moment that ended before the call began says nothing about this call:
    a Redis that does not answer must still fail within about the timeout (it used
    to wait until the stall aged out of a one-second memory)."""

    async def scenario() -> float:
        guard, monitor = await _guard()
        _block_loop(0.3)
        await asyncio.sleep(0.05)  # the monitor records the stall
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await guard.call(lambda _: asyncio.Event().wait())
        monitor.cancel()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 4 * TIMEOUT_S


def test_an_answer_that_arrived_while_the_loop_was_stalled_is_not_a_timeout() -> None:
    """The answer is there after 10 ms, but the loop is blocked from 5 ms to 300 ms:
    when it runs again the deadline has passed. That is this process's lag, not
    Redis's slowness, so the call gets its answer."""

    async def scenario() -> Any:
        guard, monitor = await _guard()
        loop = asyncio.get_running_loop()

        async def answer(_: object) -> str:
            reply = loop.create_future()
            loop.call_later(0.01, reply.set_result, "PONG")
            return await reply  # type: ignore[no-any-return]

        loop.call_later(0.005, _block_loop, 0.3)
        result = await guard.call(answer)
        monitor.cancel()
        return result

    assert asyncio.run(scenario()) == "PONG"
