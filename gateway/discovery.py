"""Which engines exist: fixed URLs, or DNS names that stand for one engine per address.

``PORTICO_ENGINES`` entries are base URLs (``http://10.0.0.5:8000``) or, with a
``dns+`` scheme (``dns+http://portico-engine:8000``), a name to resolve into
every address it has, one engine per address. A Kubernetes headless Service
resolves to the addresses of its ready pods, so engines that scale, restart or
move are found without reconfiguring the gateway: the names are resolved again
every ``dns_refresh_s``. A failed resolution keeps the addresses last seen (a
DNS hiccup must not empty the pool; dead pods are caught by health checks).

Every engine also gets a name for metric labels and logs that never carries its
address: ``engine-<i>`` for the i-th entry, ``engine-<i>-<hash of the address>``
for each address of a DNS entry. Names stay the same across restarts and
replicas, so dashboards do not break, and a metrics scrape does not map the
cluster's network.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

_log = logging.getLogger("portico.discovery")

# (host, port) -> addresses; the system resolver by default, a fake in tests.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_DNS_PREFIX = "dns+"


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, through the system resolver (resolv.conf's
    search domains included, so a Service's short name works inside its namespace)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class EngineSource:
    """One ``PORTICO_ENGINES`` entry."""

    scheme: str  # http or https
    host: str
    port: int
    path: str
    dynamic: bool  # resolve ``host`` into one engine per address

    @classmethod
    def parse(cls, entry: str) -> EngineSource:
        dynamic = entry.startswith(_DNS_PREFIX)
        parts = urlsplit(entry.removeprefix(_DNS_PREFIX) if dynamic else entry)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"engine {entry!r}: expected http(s)://host:port or dns+http(s)://name:port"
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"), dynamic)

    def url(self, address: str | None = None) -> str:
        host = address or self.host
        if ":" in host:  # an IPv6 literal needs brackets in a URL
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Discovery:
    """The current engine URLs from the configured entries."""

    def __init__(
        self,
        entries: Sequence[str],
        timeout_s: float,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.sources = [EngineSource.parse(e) for e in entries]
        self._timeout_s = timeout_s
        self._resolver = resolver
        self._last: dict[EngineSource, list[str]] = {}

    @property
    def dynamic(self) -> bool:
        return any(s.dynamic for s in self.sources)

    def static_urls(self) -> dict[str, str]:
        """The engines known without resolving anything (fixed entries only): URL -> name."""
        named: dict[str, str] = {}
        for index, source in enumerate(self.sources):
            if not source.dynamic:
                named.setdefault(source.url(), f"engine-{index}")
        return named

    async def urls(self) -> dict[str, str]:
        """Every engine now, URL -> name, in configuration order, without duplicates."""
        named: dict[str, str] = {}
        for index, source in enumerate(self.sources):
            if not source.dynamic or _is_address(source.host):
                named.setdefault(source.url(), f"engine-{index}")
                continue
            for address in await self._resolve(source):
                named.setdefault(source.url(address), self.name_of(index, address))
        return named

    @staticmethod
    def name_of(index: int, address: str) -> str:
        """The name of one address of the ``index``-th entry (a DNS name)."""
        return f"engine-{index}-{hashlib.blake2b(address.encode(), digest_size=4).hexdigest()}"

    async def _resolve(self, source: EngineSource) -> list[str]:
        try:
            async with asyncio.timeout(self._timeout_s):
                addresses = await self._resolver(source.host, source.port)
        except (OSError, TimeoutError) as exc:
            previous = self._last.get(source, [])
            _log.warning(
                "resolving %s failed (%s); keeping %d engine(s) seen before",
                source.host, type(exc).__name__, len(previous),
            )  # fmt: skip
            return previous
        if addresses != self._last.get(source):
            _log.info("%s resolves to %d engine(s)", source.host, len(addresses))
        self._last[source] = addresses
        return addresses
