"""A TCP proxy that breaks connections on purpose, for chaos tests.

It sits between the gateway and an engine (or Redis) and forwards bytes both
ways until a fault is armed. A fault hits the next ``shots`` connections whose
client sends a request containing ``match`` (by default an OpenAI generation
call, so the gateway's health probes pass through untouched; for Redis, a
command or a word of a Lua script), after ``after_bytes`` bytes of the answer
have been relayed:

- ``stall``: relay nothing more, keep both sockets open (a hung engine);
- ``half_close``: send FIN to the client, keep reading it, keep the engine side
  open until the client closes (an engine closing the connection half-way; the
  engine side stays open so the test sees whether the *gateway* lets go);
- ``reset``: abort both sides with RST.

The proxy counts what it did, so tests can check that every faulted connection
was closed by the gateway afterwards (no leaked sockets).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from tests.conftest import free_port

Action = Literal["stall", "half_close", "reset"]
_CHUNK = 65536


@dataclass
class Fault:
    action: Action
    after_bytes: int
    shots: int
    match: bytes


@dataclass
class Stats:
    connections: int = 0  # accepted, ever
    open: int = 0  # client sockets not yet closed
    faulted: int = 0  # connections a fault hit
    faulted_open: int = 0  # of those, still open


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter  # an engine, or Redis
    fault: Fault | None = None
    relayed: int = 0  # answer bytes relayed since the fault took this connection
    closed: asyncio.Event = field(default_factory=asyncio.Event)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, port: int) -> None:
        self.port = port  # where it listens, on 127.0.0.1
        self._target = (target_host, target_port)
        self._fault: Fault | None = None
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self.stats = Stats()

    def arm(
        self,
        action: Action,
        after_bytes: int = 0,
        shots: int = 1,
        match: bytes = b"POST /v1/",
    ) -> None:
        with self._lock:
            self._fault = Fault(action, after_bytes, shots, match)

    def disarm(self) -> None:
        with self._lock:
            self._fault = None

    def _take(self, request_start: bytes) -> Fault | None:
        """The armed fault if this request is one it hits (uses up one shot)."""
        with self._lock:
            fault = self._fault
            if fault is None or fault.shots <= 0 or fault.match not in request_start:
                return None
            fault.shots -= 1
            return fault

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self.stats.open += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _abort(writer)
            self.stats.open -= 1
            return
        pair = _Pair(writer, upstream_writer)
        self._pairs.add(pair)
        tasks = [
            asyncio.create_task(self._requests(reader, pair)),
            asyncio.create_task(self._answers(upstream_reader, pair)),
        ]
        await pair.closed.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pairs.discard(pair)
        self.stats.open -= 1
        if pair.fault is not None:
            self.stats.faulted_open -= 1

    def close_all(self) -> None:
        for pair in list(self._pairs):
            _abort(pair.client)
            _abort(pair.upstream)
            pair.closed.set()

    async def _requests(self, reader: asyncio.StreamReader, pair: _Pair) -> None:
        """Client to upstream. A fault attaches when a matching request starts; the
        client closing its side ends the connection (both sockets)."""
        try:
            while data := await reader.read(_CHUNK):
                if pair.fault is None and (fault := self._take(data)) is not None:
                    pair.fault = fault
                    self.stats.faulted += 1
                    self.stats.faulted_open += 1
                if not pair.upstream.is_closing():
                    pair.upstream.write(data)
                    await pair.upstream.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            pair.upstream.close()
            pair.client.close()
            pair.closed.set()

    async def _answers(self, reader: asyncio.StreamReader, pair: _Pair) -> None:
        """Upstream to client, applying the fault once ``after_bytes`` have gone by."""
        try:
            while data := await reader.read(_CHUNK):
                fault = pair.fault
                if fault is not None and pair.relayed + len(data) > fault.after_bytes:
                    head = data[: max(0, fault.after_bytes - pair.relayed)]
                    if head:
                        pair.client.write(head)
                        await pair.client.drain()
                    await self._strike(fault.action, pair)
                    return
                if fault is not None:
                    pair.relayed += len(data)
                pair.client.write(data)
                await pair.client.drain()
        except (ConnectionError, OSError):
            pass
        # The upstream closed before any fault struck: close the client side too, unless
        # a stall or half-close is still armed on this connection (it keeps it open).
        if pair.fault is None or pair.fault.action == "reset":
            pair.client.close()
            pair.closed.set()

    async def _strike(self, action: Action, pair: _Pair) -> None:
        if action == "reset":
            _abort(pair.client)
            _abort(pair.upstream)
            pair.closed.set()
        elif action == "half_close" and pair.client.can_write_eof():
            pair.client.write_eof()
        # "stall", and "half_close" after its FIN: hold on until the client lets go.
        await pair.closed.wait()


@contextmanager
def fault_proxy(target_host: str, target_port: int) -> Iterator[tuple[FaultProxy, int]]:
    """A FaultProxy on a free port of 127.0.0.1, in its own thread and event loop."""
    port = free_port()
    proxy = FaultProxy(target_host, target_port, port)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Future[None] | None = None

    async def main() -> None:
        nonlocal stop
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", port)
        stop = loop.create_future()
        started.set()
        async with server:
            await stop
            server.close()
            proxy.close_all()
            await asyncio.sleep(0.1)  # let the connections' tasks finish

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("fault proxy did not start")
    try:
        yield proxy, port
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(timeout=10)
        loop.close()
