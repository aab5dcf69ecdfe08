"""Which ``Host`` headers the gateway answers (``PORTICO_ALLOWED_HOSTS``, docs/deploy.md).

A request naming any other host is refused with an OpenAI-shaped 400 (code
``invalid_host``) before any route, credential check or engine call: a gateway that
answers any name can be reached through a DNS name an attacker controls (DNS
rebinding from a browser inside the network) and would build URLs from a name the
client chose.

- Patterns are exact names (``api.example.com``, ``10.0.0.5``, ``::1``), ``*.example.com``
  (any name ending in ``.example.com``, not ``example.com`` itself), or ``*`` (any host).
  Case, a trailing dot and the port of the header are ignored; a pattern names no port.
- Empty (the default): every host is accepted. Outside dev mode that is logged once at
  start-up as a warning rather than refused, so upgrading a deployment cannot stop it.
- ``/healthz``, ``/readyz`` and ``/metrics`` are answered whatever the host: the kubelet
  probes and Prometheus scrapes by pod IP, and these routes need no credential anyway.
- No ``Host`` header, or more than one, is refused when a list is set.

The check is a set lookup, plus one ``str.endswith`` over a tuple when there are
wildcards: no regular expression runs per request.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator
from pydantic_settings import NoDecode
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import InvalidRequest, render

_log = logging.getLogger("portico.gateway")

# Paths answered whatever the Host: probes and scrapes address the pod by IP.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def _split(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _pattern(text: str) -> str:
    """A pattern in the form requests are compared in; ValueError names a bad one."""
    pattern = text.strip().lower()
    if pattern.endswith(".") and pattern != "*.":
        pattern = pattern[:-1]  # "example.com." is "example.com"
    if pattern.startswith("[") and pattern.endswith("]"):
        pattern = pattern[1:-1]
    if pattern == "*":
        return pattern
    try:
        return str(ipaddress.ip_address(pattern))
    except ValueError:
        pass
    name = pattern[2:] if pattern.startswith("*.") else pattern
    if not name or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(
            f"PORTICO_ALLOWED_HOSTS: {text!r} is not a host name, an IP address, "
            "*.domain or * (no port, no other wildcard)"
        )
    return pattern


def _patterns(values: list[str]) -> list[str]:
    return [_pattern(v) for v in values]


# The setting's type: "api.example.com, *.corp.example" from the environment, or a list.
AllowedHostPatterns = Annotated[
    list[str], NoDecode, BeforeValidator(_split), AfterValidator(_patterns)
]


def host_name(header: str) -> str:
    """The name in a Host header: lower case, without port, brackets or a trailing dot."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    name, colon, _ = value.rpartition(":")
    return (name if colon else value).rstrip(".")


class HostPolicy:
    """Whether a Host header names an allowed host; built once from the patterns."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.any = not patterns or "*" in patterns
        self._exact = frozenset(p for p in patterns if not p.startswith("*."))
        self._suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))

    def allows(self, header: str) -> bool:
        name = host_name(header)
        return name in self._exact or (bool(self._suffixes) and name.endswith(self._suffixes))


class AllowedHosts:
    """Pure ASGI: refuses (400 ``invalid_host``) an HTTP request whose Host is not allowed."""

    def __init__(self, app: ASGIApp, patterns: Sequence[str], warn_if_any: bool) -> None:
        self.app = app
        self._policy = HostPolicy(patterns)
        # Starlette builds the middleware stack on its first call, the lifespan's start.
        if self._policy.any and not patterns and warn_if_any:
            _log.warning(
                "PORTICO_ALLOWED_HOSTS is not set: requests naming any Host are answered. "
                "Set it to the names clients use (docs/deploy.md, 'Allowed hosts')."
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only HTTP: the gateway has no WebSocket route, which the router closes anyway.
        if self._policy.any or scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        hosts = [value for key, value in scope["headers"] if key == b"host"]
        if len(hosts) == 1 and self._policy.allows(hosts[0].decode("latin-1")):
            await self.app(scope, receive, send)
            return
        refusal = InvalidRequest(
            "The Host header names no host this gateway serves.", code="invalid_host"
        )
        await render(refusal)(scope, receive, send)
