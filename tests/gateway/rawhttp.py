"""HTTP/1.1 over a raw socket, for what an HTTP client library will not do: header
floods, bodies that trickle or stall, and watching how much of a body the server
took before it answered, and whether it then closed the connection."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field

_RECV = 65536


@dataclass
class Answer:
    """What came back. ``status`` is None when nothing came within the wait."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    elapsed: float = 0.0  # seconds from the first byte sent to the end of the answer
    sent: int = 0  # bytes of the body sent before the server answered or closed
    closed: bool = False  # the server closed the connection after its answer


def head(method: str, path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", *[f"{n}: {v}" for n, v in headers]]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(data: bytes, size: int = 16384) -> bytes:
    """``data`` in chunked transfer coding, ``size`` bytes a chunk, with the last chunk."""
    frames = [b"%x\r\n%b\r\n" % (len(data[i : i + size]), data[i : i + size])
              for i in range(0, len(data), size)]  # fmt: skip
    return b"".join(frames) + b"0\r\n\r\n"


def exchange(
    port: int,
    request_head: bytes,
    body: bytes = b"",
    *,
    step: int | None = None,
    trickle_s: float | None = None,
    wait_s: float = 15.0,
    linger_s: float = 0.0,
) -> Answer:
    """Send ``request_head``, then ``body``: all at once, ``step`` bytes at a time, or
    one byte every ``trickle_s``; sending stops as soon as the server answers or
    closes. Reads the answer until the connection closes or its length is in, giving up
    after ``wait_s``. Then, for up to ``linger_s``, goes on trickling (or idling) to see
    whether the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        started = time.monotonic()
        deadline = started + wait_s
        sent = _send(
            sock, request_head, body, step if trickle_s is None else 1, trickle_s, deadline
        )
        data, closed = _read_answer(sock, deadline)
        elapsed = time.monotonic() - started
        if data and not closed and linger_s > 0:
            closed = _closes_within(sock, linger_s, trickle_s)
    if not data:
        return Answer(None, elapsed=elapsed, sent=sent, closed=closed)
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return Answer(int(lines[0].split()[1]), headers, payload, elapsed, sent, closed)


def _send(
    sock: socket.socket,
    request_head: bytes,
    body: bytes,
    step: int | None,
    trickle_s: float | None,
    deadline: float,
) -> int:
    sent = 0
    try:
        sock.sendall(request_head)
        step = step or max(len(body), 1)
        while sent < len(body) and time.monotonic() < deadline:
            if select.select([sock], [], [], trickle_s or 0)[0]:
                break  # the server answered or closed: stop sending
            sock.sendall(body[sent : sent + step])
            sent = min(sent + step, len(body))
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass  # closed (or stopped reading) while we were sending; its answer may be in
    return sent


def _read_answer(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """The answer's bytes, and whether the server closed the connection after it."""
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(_RECV)
        except ConnectionResetError:
            return data, True
        except TimeoutError:
            return data, False
        if not chunk:
            return data, True
        data += chunk
        head_bytes, found, payload = data.partition(b"\r\n\r\n")
        for line in head_bytes.split(b"\r\n") if found else []:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length" and len(payload) >= int(value):
                return data, False
    return data, False


def _closes_within(sock: socket.socket, linger_s: float, trickle_s: float | None) -> bool:
    deadline = time.monotonic() + linger_s
    interval = trickle_s or linger_s
    try:
        while time.monotonic() < deadline:
            if select.select([sock], [], [], interval)[0]:
                return sock.recv(_RECV) == b""
            if trickle_s is not None:
                sock.sendall(b" ")
    except (BrokenPipeError, ConnectionResetError):
        return True
    return False
