"""The application factory: everything the proxy needs is passed in or opened in ``cleanup_ctx``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

from proxy.cache.hot import HotTier
from proxy.cache.response import ResponseCache
from proxy.config import Settings
from proxy.errors import ProxyError, error_middleware
from proxy.flight.flights import RedisFlights, SingleFlight, listening
from proxy.keys.verify import CallerVerifier
from proxy.obs.accounting import Accountant
from proxy.obs.health import Health, watching_store
from proxy.obs.metrics import ProxyMetrics, render_latest
from proxy.obs.pricing import PriceTable, parse_pricing
from proxy.obs.upstream_prices import prices_ctx
from proxy.pipeline import chat_completions
from proxy.state import (
    ACCOUNTANT,
    CACHE,
    FLIGHTS,
    HEALTH,
    METRICS,
    REDIS,
    REGISTRY,
    REQUEST_CACHE,
    REQUEST_MODEL,
    SESSION,
    SETTINGS,
    STORE,
    VERIFIER,
)
from proxy.storage.base import ByteStore
from proxy.storage.cluster import ClusterStore, is_cluster_url
from proxy.storage.memory import MemoryStore
from proxy.storage.redis import RedisStore
from proxy.upstream.session import make_session
from proxy.web.admin import add_admin_routes, admin_auth_middleware
from proxy.web.guard import request_guard_middleware
from proxy.web.handlers import CHAT_ROUTE, bearer_matches, healthz, readyz
from proxy.web.managed import managed_ctx, managed_passthrough, refuse_evicting_state_ctx

MULTIPROC_DIR = web.AppKey("multiproc_dir", str)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time every ``/v1`` request and count it by route, model, status class and cache result."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        route = CHAT_ROUTE if request.path == CHAT_ROUTE else "/v1/other"
        sent = 0
        if response is not None:
            # A plain web.Response is written after the middleware returns: use its known length.
            sent = response.body_length if response.prepared else (response.content_length or 0)
        request.app[METRICS].observe_request(
            route,
            request.get(REQUEST_MODEL, "none"),
            status,
            request.get(REQUEST_CACHE, "none"),
            time.perf_counter() - started,
            sent,
        )


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus exposition; aggregated over workers in multiprocess mode.

    It shows key aliases, spend and remaining budgets: with ``PROXY_METRICS_TOKEN`` set it needs
    that bearer token (compared in constant time).
    """
    token = request.app[SETTINGS].metrics_token
    if token is not None and not bearer_matches(request, token):
        raise ProxyError(
            401,
            "A valid metrics token is required (Authorization: Bearer $PROXY_METRICS_TOKEN).",
            code="invalid_metrics_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    body, content_type = render_latest(request.app[REGISTRY], request.app.get(MULTIPROC_DIR))
    return web.Response(body=body, headers={"Content-Type": content_type})


def make_store(settings: Settings) -> ByteStore:
    """Redis (or a Redis Cluster seed) when configured, else the bounded in-memory LRU."""
    if settings.redis_url and is_cluster_url(settings.redis_url):
        return ClusterStore(settings.redis_url, settings.store_timeout)
    if settings.redis_url:
        return RedisStore(settings.redis_url, settings.store_timeout)
    return MemoryStore(settings.memory_cache_bytes)


def create_app(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    *,
    multiprocess_dir: str | None = None,
) -> web.Application:
    """Build the proxy. Nothing is opened until the app starts (so it starts while Redis is down)."""
    registry = registry if registry is not None else CollectorRegistry()
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, request_guard_middleware, admin_auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    if multiprocess_dir:
        app[MULTIPROC_DIR] = multiprocess_dir
    # A model has a metric label of its own if the current price table names it (the table is
    # replaced when the upstream's price list is refreshed, hence the late lookup).
    metrics = ProxyMetrics(registry, priced=lambda name: accountant.prices.names(name))  # noqa: PLW0108 - late: the table is replaced
    accountant = Accountant(PriceTable.from_config(parse_pricing(settings.pricing)), metrics)
    app[METRICS] = metrics
    app[ACCOUNTANT] = accountant
    app[HEALTH] = Health(metrics.set_degraded)
    app.cleanup_ctx.append(refuse_evicting_state_ctx)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_session_ctx)
    app.cleanup_ctx.append(prices_ctx)
    app.cleanup_ctx.append(_flights_ctx)
    app.cleanup_ctx.append(managed_ctx)
    app.router.add_post(CHAT_ROUTE, chat_completions)
    app.router.add_route("*", "/v1/{tail:.*}", managed_passthrough)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    if settings.admin_token is not None:
        add_admin_routes(app)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = make_store(settings)
    app[STORE] = store
    if isinstance(store, RedisStore | ClusterStore):
        app[REDIS] = store.client
    hot = HotTier(settings.hot_cache_bytes) if settings.hot_cache_bytes > 0 else None
    app[CACHE] = ResponseCache(store, settings.redis_prefix, hot=hot)
    async with watching_store(app[HEALTH], store):
        yield
    await store.close()


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session = make_session(settings)
    app[SESSION] = session
    app[VERIFIER] = CallerVerifier(
        app[STORE], settings.redis_prefix, settings.key_verify_ttl, session, settings.upstream_base
    )
    yield
    await session.close()


async def _flights_ctx(app: web.Application) -> AsyncIterator[None]:
    """Single flight: in-process always, across replicas when Redis is configured."""
    settings = app[SETTINGS]
    store = app[STORE]
    remote: RedisFlights | None = None
    op_timeout = settings.redis_op_timeout
    if isinstance(store, ClusterStore):
        remote = RedisFlights(
            store.client, settings.redis_prefix, settings.lock_ttl, store.subscriber, op_timeout=op_timeout
        )
    elif isinstance(store, RedisStore):
        remote = RedisFlights(store.client, settings.redis_prefix, settings.lock_ttl, op_timeout=op_timeout)
    flights = SingleFlight(
        remote, max_wait=settings.upstream_timeout + settings.lock_ttl, store_timeout=settings.store_timeout
    )
    app[FLIGHTS] = flights
    async with listening(flights, settings.shutdown_grace):
        yield
