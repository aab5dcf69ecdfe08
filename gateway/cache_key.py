"""Which requests may be cached, and under which key.

The key is SHA-256 over the route, the tenant (the principal's id) and a
canonical JSON form of every body field that can change the output. Fields
are *excluded* by name (the ones listed below, which only change how or to whom
an answer is delivered); everything else counts, including fields the
gateway does not know, so a new sampling parameter can never make two
different requests share an answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

# Delivery-only fields: the same answer serves a streamed and a non-streamed
# request (replayed in the shape asked for), whoever the end user is.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store"})

Mode = Literal["deterministic", "all", "off"]


@dataclass(frozen=True)
class CachePlan:
    """What the cache does for one request."""

    key: str | None  # None: not cacheable at all (x-cache: bypass)
    read: bool
    write: bool
    ttl_s: int


BYPASS = CachePlan(key=None, read=False, write=False, ttl_s=0)


def cache_key(route: str, tenant: str, payload: dict[str, Any]) -> str:
    relevant = {k: v for k, v in payload.items() if k not in IGNORED_FIELDS}
    canonical = json.dumps(
        [route, tenant, relevant], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_deterministic(temperature: float | None, seed: int | None) -> bool:
    """Greedy decoding, or sampling with a fixed seed, gives a repeatable answer."""
    return temperature == 0 or seed is not None


def plan(
    route: str,
    tenant: str,
    body: bytes,
    deterministic: bool,
    mode: Mode,
    cache_control: str | None,
    request_mode: str | None,
    ttl_s: int,
    max_ttl_s: int,
) -> CachePlan:
    """Decide from the global mode and the request's own headers.

    ``Cache-Control: no-cache`` skips the lookup, ``no-store`` skips the write,
    ``max-age=N`` sets the entry's TTL (capped at ``max_ttl_s``).
    ``X-Portico-Cache: on`` caches a non-deterministic request, ``off`` bypasses.
    The body is parsed (for the key) only once the request is known to be cacheable.
    """
    directives = {d.strip().lower() for d in (cache_control or "").split(",") if d.strip()}
    request_mode = (request_mode or "").strip().lower()
    if mode == "off" or request_mode == "off":
        return BYPASS
    if mode == "deterministic" and request_mode != "on" and not deterministic:
        return BYPASS
    try:
        payload = json.loads(body)
    except ValueError:
        return BYPASS
    for directive in directives:
        if directive.startswith("max-age="):
            value = directive.removeprefix("max-age=")
            if value.isdigit():
                ttl_s = int(value)
    return CachePlan(
        key=cache_key(route, tenant, payload),
        read="no-cache" not in directives,
        write="no-store" not in directives and ttl_s > 0,
        ttl_s=min(ttl_s, max_ttl_s),
    )
