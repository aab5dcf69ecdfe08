"""Which requests may be cached, and under which key.

The key is SHA-256 over the route, the tenant (the principal's id), the shape
of the answer (streamed or not) and a canonical JSON form of every body field
that can change the output. Fields are *excluded* by name (the ones listed
below, which only change how or to whom an answer is delivered); everything
else counts, including fields the gateway does not know, so a new sampling
parameter can never make two different requests share an answer.

The shape counts because an entry is the answer exactly as the engine sent it
(a body, or a stream's events; see :mod:`gateway.replay`): one shape is never
converted into the other, which is where a replay used to lose fields.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

# Delivery-only fields, whoever the end user is. ``stream`` is in the key as the
# shape (parsed: null, absent and false are one shape); ``stream_options`` only says
# which usage a stream carries, which a replay honours per request.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store"})
Shape = Literal["body", "stream"]

Mode = Literal["deterministic", "all", "off"]


@dataclass(frozen=True)
class CachePlan:
    """What the cache does for one request."""

    key: str | None  # None: not cacheable at all (x-cache: bypass)
    read: bool
    write: bool
    ttl_s: int


BYPASS = CachePlan(key=None, read=False, write=False, ttl_s=0)


def cache_key(route: str, tenant: str, shape: Shape, payload: dict[str, Any]) -> str:
    relevant = {k: v for k, v in payload.items() if k not in IGNORED_FIELDS}
    canonical = json.dumps(
        [route, tenant, shape, relevant], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_deterministic(temperature: float | None, seed: int | None) -> bool:
    """Greedy decoding, or sampling with a fixed seed, gives a repeatable answer."""
    return temperature == 0 or seed is not None


def plan(
    route: str,
    tenant: str,
    body: bytes,
    stream: bool,
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
        key=cache_key(route, tenant, "stream" if stream else "body", payload),
        read="no-cache" not in directives,
        write="no-store" not in directives and ttl_s > 0,
        ttl_s=min(ttl_s, max_ttl_s),
    )
