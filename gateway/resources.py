"""What the lifespan builds and every handler receives: one typed object."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Request
from redis.asyncio import BlockingConnectionPool, Redis

from gateway.auth import Authenticator
from gateway.batch_backends import BatchBackend, MemoryBatchBackend, RedisBatchBackend
from gateway.batch_runner import BatchRunner
from gateway.batches import BatchStore
from gateway.cache import CacheStore, MemoryCacheStore, RedisCacheStore, ResponseCache
from gateway.catalog import ModelCatalog
from gateway.discovery import Discovery
from gateway.drain import Drain
from gateway.engines import EnginePool
from gateway.file_backends import FileBackend, MemoryFileBackend, RedisFileBackend
from gateway.files import FileStore
from gateway.generation import GenerationService
from gateway.jwt_verifier import JWTVerifier
from gateway.keys import KeyHasher, KeyStore, MemoryKeyStore, RedisKeyStore
from gateway.metrics import Metrics
from gateway.preparation import Preparation
from gateway.quota import QuotaService
from gateway.ratelimit import Limiter, MemoryLimiter, RedisLimiter
from gateway.redaction import Redactor
from gateway.redis_guard import LoopLag, RedisGuard
from gateway.redis_policy import RedisPolicy
from gateway.responses import ResponseStore
from gateway.routing import Router
from gateway.sealing import Sealer
from gateway.settings import GatewaySettings
from gateway.upstream import Transport, build_transport


@dataclass(frozen=True)
class Resources:
    settings: GatewaySettings
    metrics: Metrics
    hasher: KeyHasher
    keys: KeyStore
    limiter: Limiter
    auth: Authenticator
    pool: EnginePool
    router: Router
    drain: Drain
    catalog: ModelCatalog
    generation: GenerationService
    responses: ResponseStore
    files: FileStore
    batches: BatchStore


async def _stores(
    settings: GatewaySettings, metrics: Metrics, stack: AsyncExitStack
) -> tuple[KeyStore, Limiter, CacheStore, CacheStore, FileBackend, BatchBackend]:
    """Redis-backed stores when REDIS_URL is set, else in-memory ones (one process
    only): keys, limits, cached answers, stored responses, uploaded files."""
    if settings.redis_url is None:
        return (
            MemoryKeyStore(),
            MemoryLimiter(settings.rate_limits.window_s),
            MemoryCacheStore(settings.cache.memory_max_bytes),
            MemoryCacheStore(settings.responses.memory_max_bytes),
            MemoryFileBackend(),
            MemoryBatchBackend(),
        )
    # Blocking: past 200 busy connections a call waits (within the guard's timeout)
    # instead of failing at once with MaxConnectionsError and tripping the breaker.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url.get_secret_value(),
        # Backstops only: RedisGuard bounds every call, and knows when the wait
        # was this process's own event-loop lag rather than Redis's slowness.
        socket_connect_timeout=5,
        socket_timeout=5,
        max_connections=200,
    )
    redis = Redis.from_pool(pool)
    stack.push_async_callback(redis.aclose)
    lag = LoopLag()
    monitor = asyncio.create_task(lag.run(), name="portico-loop-lag")
    stack.callback(monitor.cancel)
    guard = RedisGuard(redis, settings.redis, metrics, lag)
    prefix = settings.redis.prefix
    # The file store's calls move up to a whole file: their own time limit, and their
    # own breaker, so a slow upload does not open the one every request's auth uses.
    files_redis = settings.redis.model_copy(update={"timeout_s": settings.files.redis_timeout_s})
    return (
        RedisKeyStore(guard, prefix, _sealer(settings)),
        RedisLimiter(guard, prefix, settings.rate_limits.window_s),
        RedisCacheStore(guard, prefix),
        RedisCacheStore(guard, prefix, "responses"),
        RedisFileBackend(RedisGuard(redis, files_redis, metrics, lag), prefix),
        RedisBatchBackend(RedisGuard(redis, files_redis, metrics, lag), prefix),
    )


def _sealer(settings: GatewaySettings) -> Sealer | None:
    """What encrypts cached answers and key records at rest; None: no keys, no encryption."""
    return Sealer.from_texts([k.get_secret_value() for k in settings.encryption_keys])


def _routing(
    settings: GatewaySettings, metrics: Metrics, transport: Transport, stack: AsyncExitStack
) -> tuple[EnginePool, Router, Drain]:
    """The engine pool with its health-check task, the router, and the SIGTERM drain."""
    discovery = Discovery(settings.engine_urls, timeout_s=settings.upstream.probe_s)
    pool = EnginePool(transport, discovery, settings.upstream, settings.routing, metrics)
    checker = asyncio.create_task(pool.check_forever(), name="portico-engine-health")
    stack.callback(checker.cancel)
    stack.callback(pool.stop)
    drain = Drain(settings.drain_grace_s, pool.outstanding)
    stack.callback(drain.install())
    return pool, Router(pool, settings.routing, metrics), drain


def _files(settings: GatewaySettings, backend: FileBackend, stack: AsyncExitStack) -> FileStore:
    """The file store, with the task that deletes expired files for as long as it lives."""
    files = FileStore(backend, settings.files, _sealer(settings))
    sweeper = asyncio.create_task(files.sweep_forever(), name="portico-file-sweep")
    stack.callback(sweeper.cancel)
    return files


def _batches(
    settings: GatewaySettings, metrics: Metrics, backend: BatchBackend, files: FileStore,
    generation: GenerationService, keys: KeyStore, stack: AsyncExitStack,
) -> BatchStore:  # fmt: skip
    """The batch store, with this replica's batch workers running for as long as it lives."""
    batches = BatchStore(backend, files, settings.batches, settings.files.ttl_s, _sealer(settings))
    runner = BatchRunner(
        batches, files, generation, keys, settings.batches, metrics, _sealer(settings)
    )
    worker = asyncio.create_task(runner.run(), name="portico-batch-runner")

    async def stop() -> None:
        # Awaited, while Redis is still open: the workers put their lines back.
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    stack.push_async_callback(stop)
    return batches


def _preparation(settings: GatewaySettings, catalog: ModelCatalog, metrics: Metrics) -> Preparation:
    redaction = settings.redaction
    return Preparation(
        catalog,
        settings.limits,
        metrics,
        Redactor(redaction.kinds) if redaction.mode == "redact" else None,
        settings.rate_limits.default_max_tokens,
        settings.isolate_prefix_cache,
        settings.batches.engine_priority,
    )


def lifespan_for(
    settings: GatewaySettings, metrics: Metrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The lifespan: opens the upstream and Redis pools, publishes Resources, closes all."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            transport = build_transport(settings.upstream)
            stack.push_async_callback(transport.aclose)
            # JWKS fetches (rare) use httpx; engines get the transport above.
            client = httpx.AsyncClient(timeout=settings.upstream.probe_s)
            stack.push_async_callback(client.aclose)
            keys, limiter, cache_store, response_store, file_backend, batch_backend = await _stores(
                settings, metrics, stack
            )
            files = _files(settings, file_backend, stack)
            pepper = settings.key_pepper.get_secret_value() if settings.key_pepper else None
            hasher = KeyHasher(pepper)
            jwt = JWTVerifier(settings.jwt, client)
            pool, router, drain = _routing(settings, metrics, transport, stack)
            catalog = ModelCatalog(pool, settings.models_refresh_s)
            policy = RedisPolicy(settings.redis.failure_policy, metrics)
            responses = ResponseStore(
                response_store,
                settings.responses,
                settings.limits.max_body_bytes,
                policy,
                _sealer(settings),
            )
            quota = QuotaService(
                limiter, settings.rate_limits, settings.limits.max_tokens, policy, metrics,
                settings.batches.tpm,
            )  # fmt: skip
            cache = ResponseCache(cache_store, settings.cache, metrics, _sealer(settings), policy)
            preparation = _preparation(settings, catalog, metrics)
            generation = GenerationService(
                preparation, cache, quota, router, settings.routing, metrics, responses
            )
            batches = _batches(settings, metrics, batch_backend, files, generation, keys, stack)
            app.state.resources = Resources(
                settings=settings,
                metrics=metrics,
                hasher=hasher,
                keys=keys,
                limiter=limiter,
                auth=Authenticator(settings, hasher, keys, jwt, limiter, metrics, policy),
                pool=pool,
                router=router,
                drain=drain,
                catalog=catalog,
                generation=generation,
                responses=responses,
                files=files,
                batches=batches,
            )
            yield

    return lifespan


async def get_resources(request: Request) -> Resources:
    # async on purpose: FastAPI runs plain ``def`` dependencies in a worker thread,
    # which cost ~0.6 ms of CPU per request in bench/ for no benefit.
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]
