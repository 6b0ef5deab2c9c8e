"""The composition root: ``create_app(settings, registry)`` builds the proxy from every package.

It is the one module that imports them all (storage backends, flight, budget wiring, the web
layer); nothing imports it but the command line and tests. Resources are opened in
``cleanup_ctx`` generators, in order, and closed in reverse: nothing is opened until the app
starts, so it starts while Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.budget.wiring import managed_ctx, refuse_evicting_state_ctx
from proxy.cache.hot import HotTier
from proxy.cache.response import ResponseCache
from proxy.config import Settings
from proxy.console.app import create_console_app
from proxy.console.wiring import console_ctx
from proxy.endpoints.base import Endpoint
from proxy.endpoints.chat import ChatCompletions
from proxy.endpoints.embeddings import Embeddings
from proxy.endpoints.image_edits import ImageEdits
from proxy.endpoints.images import ImagesGenerations
from proxy.endpoints.responses import Responses
from proxy.flight.flights import RedisFlights, SingleFlight, listening
from proxy.keys.settings import check_endpoints, validate_settings
from proxy.keys.verify import CallerVerifier
from proxy.obs.accounting import Accountant
from proxy.obs.health import Health
from proxy.obs.metrics import ProxyMetrics
from proxy.obs.pricing import PriceTable, parse_pricing
from proxy.obs.upstream_prices import UpstreamPrices
from proxy.pipeline.flow import Pipeline, route
from proxy.pipeline.services import Services
from proxy.state import (
    ACCOUNTANT,
    AUTH,
    BUDGETS,
    CACHE,
    FLIGHTS,
    HEALTH,
    METRICS,
    MULTIPROC_DIR,
    PAID_ENDPOINTS,
    PIPELINE,
    PRICE_LOADER,
    REDIS,
    REGISTRY,
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
from proxy.web.admin import create_admin_app
from proxy.web.middleware import front_middleware
from proxy.web.models import MODELS, models
from proxy.web.ops import healthz, metrics_handler, readyz, watching_store
from proxy.web.passthrough import managed_passthrough

# The cached APIs, each served by the one pipeline (issue 13 adds images, embeddings, responses).
ENDPOINTS: tuple[Endpoint, ...] = (
    ChatCompletions(),
    ImagesGenerations(),
    ImageEdits(),
    Embeddings(),
    Responses(),
)


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
    # The `endpoint` label's values: the cached endpoints and the model list, nothing a client names.
    metrics = ProxyMetrics(registry, endpoints={*(endpoint.name for endpoint in ENDPOINTS), MODELS})
    app = web.Application(
        middlewares=[front_middleware(frozenset(endpoint.route for endpoint in ENDPOINTS), metrics)],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    paid = MappingProxyType({endpoint.name: endpoint.route for endpoint in ENDPOINTS})
    _check_config_keys(settings, paid)
    app[PAID_ENDPOINTS] = paid
    if multiprocess_dir:
        app[MULTIPROC_DIR] = multiprocess_dir
    accountant = Accountant(PriceTable.from_config(parse_pricing(settings.pricing)), metrics)
    # A model has a metric label of its own if the live price table names it.
    metrics.priced = accountant.priced
    app[METRICS] = metrics
    app[ACCOUNTANT] = accountant
    app[HEALTH] = Health(metrics.set_degraded)
    app.cleanup_ctx.append(refuse_evicting_state_ctx)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_session_ctx)
    app.cleanup_ctx.append(_prices_ctx)
    app.cleanup_ctx.append(_flights_ctx)
    app.cleanup_ctx.append(managed_ctx)  # keys and budgets: plugged in here, never imported by web/
    app.cleanup_ctx.append(console_ctx)  # closed after the pipeline's writes: their rows are flushed
    app.cleanup_ctx.append(_pipeline_ctx)
    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.route, route(endpoint))
    # The model list, cached briefly per scope (HEAD and other methods fall through to pass-through).
    app.router.add_route("GET", "/v1/models", models)
    app.router.add_route("GET", "/v1/models/{model_id}", models)
    app.router.add_route("*", "/v1/{tail:.*}", managed_passthrough)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.add_subapp("/admin/", create_admin_app(settings.admin_token))
    app.add_subapp("/ui", create_console_app(settings.admin_token))
    return app


def _check_config_keys(settings: Settings, paid: Mapping[str, str]) -> None:
    """A `[[keys]]` entry naming an endpoint this proxy does not serve is refused here, before
    anything is opened (InvalidKeySettings lists the valid names); the rest of the entry is checked
    when the key store loads it."""
    for entry in settings.keys:
        check_endpoints(validate_settings({"endpoints": entry.get("endpoints")})["endpoints"], paid)  # type: ignore[arg-type]  # a tuple or None


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = make_store(settings)
    app[STORE] = store
    if isinstance(store, RedisStore | ClusterStore):
        app[REDIS] = store.client
    hot = HotTier(settings.hot_cache_bytes) if settings.hot_cache_bytes > 0 else None
    app[CACHE] = ResponseCache(
        store,
        settings.redis_prefix,
        hot=hot,
        max_entry_bytes=settings.cache_max_entry_bytes,
        store_timeout=settings.store_timeout,
        on_store_error=lambda op: app[METRICS].store_errors.labels(op).inc(),
    )
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


async def _prices_ctx(app: web.Application) -> AsyncIterator[None]:
    """Keep prices current from the upstream's list (``PROXY_UPSTREAM_PRICES``) while the app runs."""
    settings = app[SETTINGS]
    if not settings.upstream_prices:
        yield
        return
    key = settings.upstream_api_key
    loader = UpstreamPrices(
        app[ACCOUNTANT],
        app[SESSION],
        f"{settings.upstream_base}/models",
        authorization=None if key is None else f"Bearer {key.value}",
        refresh_s=settings.prices_refresh,
    )
    app[PRICE_LOADER] = loader
    task = asyncio.create_task(loader.run(), name="upstream-prices")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


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


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    """The flow, over every service above; at shutdown, the cache's pending writes (each ends its
    flight) get the grace period before the flights' own announcements are flushed."""
    settings = app[SETTINGS]
    app[PIPELINE] = Pipeline(
        Services(
            settings=settings,
            cache=app[CACHE],
            flights=app[FLIGHTS],
            session=app[SESSION],
            auth=app[AUTH],
            verifier=app[VERIFIER],
            budgets=app[BUDGETS],
            accountant=app[ACCOUNTANT],
            metrics=app[METRICS],
        )
    )
    yield
    writes = app[CACHE].writes
    if not await writes.drain(settings.shutdown_grace):
        await writes.abandon(1.0)
