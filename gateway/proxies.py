"""Which address a request comes from when proxies stand in front (docs/deploy.md).

The per-IP limit on failed authentications counts ``request.client``. uvicorn can
rewrite it from ``X-Forwarded-For`` itself, but by default it believes the header
from 127.0.0.1: a client behind a port-forward or a sidecar then picks its own
address for each guess and is never locked out. So every launcher runs uvicorn with
``--no-proxy-headers`` and the gateway decides here, whatever launched it:

- The header is read only when the direct peer is in ``PORTICO_TRUSTED_PROXIES``
  (empty by default: the header is ignored).
- Each proxy appends the address it got the connection from, so the header is read
  from the right: the first address that is not a trusted proxy is the client.
  Entries left of it were written by the client and prove nothing.
- An entry that is not an IP address (``unknown``, junk) ends the walk: the client is
  then the peer itself, never a string the client chose.

A server that rewrote the address anyway leaves no trace of the real peer in the
ASGI scope; the one sign is a client port of 0 (uvicorn's when the header carries no
port), which is logged once as a misconfiguration. It cannot be relied on: a header
entry with a port yields that port.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Annotated

from pydantic import BeforeValidator, IPvAnyNetwork
from pydantic_settings import NoDecode
from starlette.types import ASGIApp, Receive, Scope, Send

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_log = logging.getLogger("portico.gateway")


def _split(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# The setting's type: "10.0.0.0/8, 192.168.1.7" from the environment, or a list.
TrustedProxies = Annotated[list[IPvAnyNetwork], NoDecode, BeforeValidator(_split)]


def parse_address(text: str) -> Address | None:
    """An IP address from a header entry or a peer: ``1.2.3.4``, ``1.2.3.4:80``,
    ``::1``, ``[::1]:80``; IPv4-mapped IPv6 as IPv4. None when it is not one."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


def _trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def client_host(peer: str, forwarded: str | None, proxies: Sequence[Network]) -> str:
    """The client's address: ``peer`` unless it is a trusted proxy, then the right-most
    entry of ``forwarded`` (X-Forwarded-For) that is not one."""
    address = parse_address(peer)
    if forwarded is None or address is None or not _trusted(address, proxies):
        return peer
    hops = forwarded.split(",")
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return peer
        if not _trusted(address, proxies):
            return str(address)
    return str(parse_address(hops[0]))  # every hop a trusted proxy: the farthest one


def _header(scope: Scope, name: bytes) -> str | None:
    values = [value for key, value in scope["headers"] if key == name]
    return b",".join(values).decode("latin-1") if values else None


class ForwardedClient:
    """Pure ASGI: ``scope["client"]`` becomes the address :func:`client_host` finds,
    so ``request.client.host`` is the client's wherever it is read."""

    def __init__(self, app: ASGIApp, proxies: Sequence[Network]) -> None:
        self.app = app
        self._proxies = tuple(proxies)
        self._warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client:
            if self._proxies:
                forwarded = _header(scope, b"x-forwarded-for")
                host = client_host(client[0], forwarded, self._proxies)
                if host != client[0]:
                    scope = {**scope, "client": (host, 0)}
            elif client[1] == 0 and not self._warned:
                self._warn_if_rewritten(scope)
        await self.app(scope, receive, send)

    def _warn_if_rewritten(self, scope: Scope) -> None:
        if _header(scope, b"x-forwarded-for") is None:
            return
        self._warned = True
        _log.warning(
            "The server rewrote the client address from X-Forwarded-For (client port 0): "
            "run uvicorn with --no-proxy-headers and name proxies in "
            "PORTICO_TRUSTED_PROXIES, or clients choose the address the per-IP "
            "auth-failure limit counts (docs/deploy.md)."
        )
