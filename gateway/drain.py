"""Graceful drain on SIGTERM, the way Kubernetes stops a pod.

uvicorn's own SIGTERM handling closes the listening socket at once and then
waits for open connections, so a load balancer that has not yet noticed the
pod going away would see refused connections. Instead, the gateway takes
SIGTERM first: ``/readyz`` fails at once (the endpoint leaves the Service),
new generation requests get 503 with Retry-After, and in-flight requests and
streams continue. When none is left, or after ``drain_grace_s``, uvicorn's
handler is called and uvicorn shuts down as usual (run it with
``--timeout-graceful-shutdown`` so a stream that outlives the grace is cut).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

_log = logging.getLogger("portico.drain")
_POLL_S = 0.05


class Drain:
    """The draining flag, and the SIGTERM handler that sets it."""

    def __init__(self, grace_s: float, outstanding: Callable[[], int]) -> None:
        self._grace_s = grace_s
        self._outstanding = outstanding
        self.draining = False
        self._task: asyncio.Task[None] | None = None

    def install(self) -> Callable[[], None]:
        """Take SIGTERM over from the server (uvicorn); returns the undo.

        Only the main thread may handle signals; elsewhere (tests serving the
        app in a thread) this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self._task is None:
                loop.call_soon_threadsafe(self._start, previous, signum)

        signal.signal(signal.SIGTERM, on_sigterm)

        def restore() -> None:
            signal.signal(signal.SIGTERM, previous)

        return restore

    def _start(self, previous: Any, signum: int) -> None:
        self.draining = True
        _log.warning(
            "SIGTERM: draining (%d in flight, grace %.0fs)", self._outstanding(), self._grace_s
        )
        self._task = asyncio.get_running_loop().create_task(self._drain(previous, signum))

    async def _drain(self, previous: Any, signum: int) -> None:
        deadline = time.monotonic() + self._grace_s
        # Polled: the count lives in the pool, and 20 checks a second cost nothing here.
        while self._outstanding() > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_POLL_S)
        _log.warning("drained (%d still in flight); shutting down", self._outstanding())
        if callable(previous):
            previous(signum, None)  # uvicorn's handle_exit: stop serving, run the lifespan's end
        else:
            signal.signal(signum, previous)
            signal.raise_signal(signum)  # no server handler: the default action ends the process
