"""The completions service: one pipeline from a validated call to a ``Reply``.

    prepare ─▶ cache.begin ─┬─ Hit ──▶ admit (rpm only) ─▶ replay ─────────────▶ Reply
                            └─ Ticket ─▶ Exchange: admit ─▶ route + open ─┬─ read ──▶ Reply
                                    ▲                                     └─ relay ─▶ Reply (stream)
                                    │    every exit: Exchange.finish (settle, store, release)
    Responses API: responses.resume ─▶ prepare ─▶ ResponseKeeper (in the Ticket's place)

Takes plain values (a ``Call``), never a Request, and returns a ``Reply``, never
an HTTP response: ``gateway.api`` renders it, and any other caller (a batch
worker) can consume it the same way.
"""

from __future__ import annotations

import secrets

from gateway import telemetry
from gateway.auth import Principal
from gateway.cache import Hit, ResponseCache
from gateway.cache_key import CachePlan, is_deterministic
from gateway.exchange import Call, Exchange, Keeper, Reply
from gateway.metrics import Metrics
from gateway.preparation import Preparation
from gateway.protocol import APIRequest, EmbeddingRequest, ResponsesRequest
from gateway.quota import QuotaService
from gateway.replay import Delivery, replay
from gateway.responses import ResponseStore
from gateway.routing import EngineCall, Router, affinity_key
from gateway.settings import RoutingSettings


class GenerationService:
    def __init__(
        self,
        preparation: Preparation,
        cache: ResponseCache,
        quota: QuotaService,
        router: Router,
        routing: RoutingSettings,
        metrics: Metrics,
        responses: ResponseStore,
    ) -> None:
        self._preparation = preparation
        self._cache = cache
        self._responses = responses
        self._quota = quota
        self._router = router
        self._prefix_chars = routing.affinity_prefix_chars
        self._metrics = metrics

    async def validate(self, route: str, body: bytes, principal: Principal) -> APIRequest:
        """Everything that can refuse a request before the engine sees it."""
        return await self._preparation.validate(route, body, principal)

    async def respond(self, call: Call) -> Reply:
        call, begun = await self._begin(call)
        if isinstance(begun, Hit):
            return await self._hit(call, begun)
        self._count_cache(begun.result)
        exchange = Exchange(call, begun, self._preparation.prompt_tokens(call))
        try:
            exchange.admission = await self._quota.admit(
                call.principal, call.request, exchange.prompt, batch=call.batch
            )
            engine = await self._open(call)
        except BaseException as exc:
            await exchange.fail(exc)
            raise
        if call.request.stream:
            return exchange.relay(engine, begun.recorder())
        return await exchange.read(engine)

    async def _begin(self, call: Call) -> tuple[Call, Hit | Keeper]:
        """The prepared call and what keeps its answer: the cache's verdict or, for the
        Responses API (never cached: every response has its own id), the response
        store's keeper, once the conversation it continues is inlined."""
        if isinstance(call.request, ResponsesRequest):
            call = self._preparation.prepare(await self._responses.resume(call))
            return call, self._responses.keeper(call)
        call = self._preparation.prepare(call)
        return call, await self._cache.begin(self._plan(call))

    async def _open(self, call: Call) -> EngineCall:
        # vLLM uses x-request-id as its internal request id, which must be unique;
        # a client may reuse its own id, so the engine gets it with a fresh suffix.
        headers = {
            "content-type": "application/json",
            "x-request-id": f"{call.request_id}-{secrets.token_hex(4)}",
        }
        body = self._preparation.engine_body(call)
        key = affinity_key(call.request, call.session, self._prefix_chars)
        return await self._router.open(call.request, key, call.route, body, headers, call.batch)

    def _plan(self, call: Call) -> CachePlan:
        request = call.request
        # An embedding is a function of its input; a completion only when not sampled.
        deterministic = isinstance(request, EmbeddingRequest) or is_deterministic(
            request.temperature, request.seed
        )
        return self._cache.plan(
            call.route,
            call.principal.id,
            call.body,
            request.stream,
            deterministic,
            call.cache_control,
            call.cache_mode,
        )

    def _count_cache(self, result: str) -> None:
        self._metrics.cache_results.labels(result).inc()
        telemetry.current().cache = result

    async def _hit(self, call: Call, hit: Hit) -> Reply:
        self._count_cache("hit")
        admission = await self._quota.admit(call.principal, call.request, None, call.batch)
        headers = {**admission.headers, "x-cache": "hit"}
        # The same usage the relay would leave in a fresh stream (streaming.UsageTap).
        delivery = Delivery(
            call.request_id, call.id_prefix, call.wants_usage, call.wants_running_usage
        )
        # One body, also for a stream: an iterator would make Starlette hop to a thread
        # per chunk. The key holds the shape, so the entry is in the shape asked for.
        media_type = "text/event-stream" if call.request.stream else "application/json"
        return Reply(200, media_type, headers, body=replay(hit.entry, delivery))
