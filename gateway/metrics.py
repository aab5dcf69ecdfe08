"""Prometheus metrics on a registry the app owns.

Labels are bounded by construction: ``route`` is a route template (or
"unmatched"), ``model`` is a model the engine reported (or "none"),
``status_class`` is one of 1xx..5xx. Never a key, a prompt or a user id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# LLM requests run from milliseconds (cache hits, errors) to minutes (long streams).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The gateway's metric families."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "portico_requests",
            "HTTP requests answered, by route template, model and status class.",
            ["route", "model", "status_class"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "portico_request_duration_seconds",
            "Time from request start to the last byte of the response.",
            ["route"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "portico_requests_in_flight",
            "Requests being handled (streams count until their last chunk).",
            registry=self.registry,
        )

        self.ratelimit_rejections = Counter(
            "portico_ratelimit_rejections",
            "Requests refused by a limit, by kind: rpm, tpm, budget, auth_ip.",
            ["kind"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "portico_auth_failures",
            "Requests refused with 401.",
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "portico_redis_errors",
            "Redis calls that failed or timed out (including breaker-open refusals).",
            registry=self.registry,
        )
        self.redis_fail_open = Counter(
            "portico_redis_fail_open",
            "Requests admitted without a limit check because Redis failed (policy 'open').",
            registry=self.registry,
        )

        self.cache_results = Counter(
            "portico_cache_requests",
            "Generation requests by cache result: hit, miss, bypass.",
            ["result"],
            registry=self.registry,
        )
        self.cache_stores = Counter(
            "portico_cache_stores", "Answers written to the cache.", registry=self.registry
        )
        self.cache_stored_bytes = Counter(
            "portico_cache_stored_bytes", "Bytes written to the cache.", registry=self.registry
        )
        self.cache_merges = Counter(
            "portico_cache_merges",
            "Requests that waited for an identical one in flight instead of calling the engine.",
            registry=self.registry,
        )
        self.cache_hit_seconds = Histogram(
            "portico_cache_lookup_seconds",
            "Time to read a cache entry that was found.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
