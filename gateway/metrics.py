"""Prometheus metrics on a registry the app owns.

Labels are bounded by construction: ``route`` is a route template (or
"unmatched"), ``model`` is a model the engine reported (or "none"),
``engine`` is an engine's name (``engine-<i>``, or ``engine-<i>-<hash>`` for one
address of a DNS entry, never the address itself; series of addresses DNS stops
listing are removed), ``status_class`` is 1xx..5xx, ``kind``
and ``result`` are closed sets. Never a key, a prompt or a user id.

With several uvicorn workers (``PROMETHEUS_MULTIPROC_DIR`` set, which
``portico gateway serve --workers N`` does), prometheus-client keeps the
values in files shared by the workers and ``render`` sums them, so a scrape
of any worker sees the whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.telemetry import RequestRecord

# LLM requests run from milliseconds (cache hits, errors) to minutes (long streams).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_UPSTREAM_OUTCOMES = ("ok", "rejected", "unavailable", "timeout")
_TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1)


class Metrics:
    """The gateway's metric families."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self._multiprocess_dir = multiprocess_dir
        if multiprocess_dir is None:
            # Process memory and CPU (the seed's model-memory gauge, for the gateway).
            ProcessCollector(namespace="portico", registry=self.registry)
        r = self.registry
        self._request_families(r)
        self._engine_families(r)
        self._limit_families(r)
        self._cache_families(r)

    def _request_families(self, r: CollectorRegistry) -> None:
        """Requests as the client sees them: counts, durations, tokens, streams."""
        self.requests = Counter(
            "portico_requests",
            "HTTP requests answered, by route template, model and status class.",
            ["route", "model", "status_class"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "portico_request_duration_seconds",
            "Time from request start to the last byte of the response.",
            ["route"], buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.overhead = Histogram(
            "portico_gateway_overhead_seconds",
            "Time spent in the gateway itself: request duration minus the waits on the engine.",
            ["route"], buckets=_OVERHEAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "portico_requests_in_flight",
            "Requests being handled (streams count until their last chunk).",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.asyncio_tasks = Gauge(
            "portico_asyncio_tasks",
            "Tasks alive on the event loop when scraped (requests, streams, the gateway's own "
            "loops): flat under steady load, back to its idle value after load; growth is a leak.",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.ttft = Histogram(
            "portico_time_to_first_token_seconds",
            "Streams: time from request start to the first content chunk relayed.",
            ["model"], buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.tpot = Histogram(
            "portico_time_per_output_token_seconds",
            "Streams: time after the first token divided by the further tokens.",
            ["model"], buckets=_TPOT_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "portico_prompt_tokens", "Prompt tokens the engine reported.", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "portico_completion_tokens", "Completion tokens the engine reported.", ["model"],
            registry=r,
        )  # fmt: skip

    def _engine_families(self, r: CollectorRegistry) -> None:
        """The engines: outcomes, health, load, retries, queueing."""
        self.upstream_requests = Counter(
            "portico_upstream_requests",
            "Requests sent to an engine, by outcome: ok, rejected (engine 4xx/5xx), "
            "unavailable, timeout.",
            ["engine", "outcome"], registry=r,
        )  # fmt: skip
        self.engine_up = Gauge(
            "portico_engine_up", "1 if the engine's last health probe succeeded, else 0.",
            ["engine"], registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self.engine_in_flight = Gauge(
            "portico_engine_in_flight", "Requests outstanding on each engine (streams until "
            "their end).", ["engine"], registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.engine_healthy = Gauge(
            "portico_engine_healthy",
            "1 while the engine is in rotation, 0 while its circuit breaker has it out.",
            ["engine"], registry=r, multiprocess_mode="min",
        )  # fmt: skip
        self.engine_retries = Counter(
            "portico_engine_retries",
            "Requests moved to another engine after this one failed before the first byte.",
            ["engine"], registry=r,
        )  # fmt: skip
        self.streams_broken = Counter(
            "portico_streams_broken",
            "Streams the engine broke after the first byte (connection lost or idle past "
            "the limit); each ended with an SSE error event, no [DONE], and was not cached.",
            ["engine"], registry=r,
        )  # fmt: skip
        self.engine_queue_wait = Histogram(
            "portico_engine_queue_wait_seconds",
            "Time a request waited for a free slot before being sent to this engine.",
            ["engine"], buckets=(*_OVERHEAD_BUCKETS, 2.5, 5, 10, 30), registry=r,
        )  # fmt: skip
        self.backpressure_rejections = Counter(
            "portico_backpressure_rejections",
            "Requests answered 503 without an engine, by reason: queue_full, queue_timeout, "
            "no_engine, draining, request_bodies (the process holds its limit of request "
            "body bytes).",
            ["reason"], registry=r,
        )  # fmt: skip

    def _limit_families(self, r: CollectorRegistry) -> None:
        """Limits, authentication and Redis trouble."""
        self.ratelimit_rejections = Counter(
            "portico_ratelimit_rejections",
            "Requests refused by a limit, by kind: rpm, tpm, budget, auth_ip.",
            ["kind"], registry=r,
        )  # fmt: skip
        self.auth_failures = Counter(
            "portico_auth_failures", "Requests refused with 401.", registry=r
        )
        self.redis_errors = Counter(
            "portico_redis_errors", "Redis calls that failed or timed out.", registry=r
        )
        self.redis_fail_open = Counter(
            "portico_redis_fail_open",
            "Requests admitted without a limit check because Redis failed (policy 'open').",
            registry=r,
        )

    def _cache_families(self, r: CollectorRegistry) -> None:
        """The response cache and redaction."""
        self.cache_results = Counter(
            "portico_cache_requests", "Generation requests by cache result: hit, miss, bypass.",
            ["result"], registry=r,
        )  # fmt: skip
        self.cache_stores = Counter(
            "portico_cache_stores", "Answers written to the cache.", registry=r
        )
        self.cache_stored_bytes = Counter(
            "portico_cache_stored_bytes", "Bytes written to the cache.", registry=r
        )
        self.cache_unreadable = Counter(
            "portico_cache_unreadable",
            "Cache entries found but not readable under the configured encryption keys "
            "(a wrong or dropped key; written with encryption off, or on): served as misses.",
            registry=r,
        )
        self.cache_merges = Counter(
            "portico_cache_merges",
            "Requests that waited for an identical one in flight instead of calling the engine.",
            registry=r,
        )
        self.redactions = Counter(
            "portico_redactions",
            "PII matches replaced in prompts before the engine, by kind: email, phone, card, "
            "ssn, nino, iban (never the values).",
            ["kind"], registry=r,
        )  # fmt: skip
        self.batch_lines = Counter(
            "portico_batch_lines",
            "Batch lines run, by outcome: completed (2xx), failed (an error answer), retried "
            "(refused for now and put back), duplicate (run twice after a lease ended; "
            "recorded once).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.batches_finished = Counter(
            "portico_batches_finished", "Batches finished, by final status.", ["status"],
            registry=r,
        )  # fmt: skip
        self.cache_hit_seconds = Histogram(
            "portico_cache_lookup_seconds", "Time to read a cache entry that was found.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1), registry=r,
        )  # fmt: skip

    def observe(self, route: str, status: int, record: RequestRecord) -> None:
        """Everything a finished request contributes."""
        model = record.model
        elapsed = record.elapsed()
        self.requests.labels(route, model, f"{status // 100}xx").inc()
        self.duration.labels(route).observe(elapsed)
        self.overhead.labels(route).observe(record.overhead())
        if record.prompt_tokens is not None:
            self.prompt_tokens.labels(model).inc(record.prompt_tokens)
        if record.completion_tokens is not None:
            self.completion_tokens.labels(model).inc(record.completion_tokens)
        ttft = record.ttft()
        if record.stream and ttft is not None:
            self.ttft.labels(model).observe(ttft)
            if record.completion_tokens and record.completion_tokens > 1:
                self.tpot.labels(model).observe((elapsed - ttft) / (record.completion_tokens - 1))

    def forget_engine(self, name: str) -> None:
        """Drop an engine's series once discovery no longer lists it (pods come and go;
        their addresses must not pile up as label values)."""
        if self._multiprocess_dir is not None:
            return  # prometheus-client cannot remove series from the shared files
        for family in (
            self.engine_up, self.engine_in_flight, self.engine_healthy,
            self.engine_retries, self.engine_queue_wait, self.streams_broken,
        ):  # fmt: skip
            with contextlib.suppress(KeyError):
                family.remove(name)
        for outcome in _UPSTREAM_OUTCOMES:
            with contextlib.suppress(KeyError):
                self.upstream_requests.remove(name, outcome)

    def render(self) -> bytes:
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to count
            self.asyncio_tasks.set(len(asyncio.all_tasks()))
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
