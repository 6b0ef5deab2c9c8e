"""Every ``web.AppKey`` and ``web.RequestKey`` of the application, typed, in one place.

It imports nothing at run time but aiohttp: the types behind the keys come in for the type checker
only, so any module can name a piece of app state without loading the service behind it (the web
layer names the budget guard without importing budget code). The composition root
(``proxy.app``) sets each key once, in the ``cleanup_ctx`` that opens the resource.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Mapping

    import aiohttp
    import redis.asyncio as aioredis
    from prometheus_client import CollectorRegistry

    from proxy.budget.guard import BudgetGuard
    from proxy.budget.state_store import StateStoreGuard
    from proxy.cache.index import ImageIndex
    from proxy.cache.response import ResponseCache
    from proxy.config import Settings
    from proxy.console.sessions import LoginLimiter, SessionStore
    from proxy.flight.flights import SingleFlight
    from proxy.keys.auth import KeyAuthenticator
    from proxy.keys.store import KeyStore
    from proxy.keys.verify import CallerVerifier
    from proxy.obs.accounting import Accountant
    from proxy.obs.health import Health
    from proxy.obs.metrics import ProxyMetrics
    from proxy.obs.stats import TrafficStats
    from proxy.obs.upstream_prices import UpstreamPrices
    from proxy.pipeline.flow import Pipeline
    from proxy.storage.base import ByteStore
    from proxy.web.paths import Target

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry")
# Where workers write their metrics (``PROMETHEUS_MULTIPROC_DIR``); absent with one process.
MULTIPROC_DIR: web.AppKey[str] = web.AppKey("multiproc_dir")
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session")
STORE: web.AppKey[ByteStore] = web.AppKey("store")
# A plain or a cluster client: every consumer only runs single-slot scripts and commands.
REDIS: web.AppKey[aioredis.Redis | aioredis.RedisCluster] = web.AppKey("redis")
CACHE: web.AppKey[ResponseCache] = web.AppKey("cache")
FLIGHTS: web.AppKey[SingleFlight] = web.AppKey("flights")
METRICS: web.AppKey[ProxyMetrics] = web.AppKey("metrics")
ACCOUNTANT: web.AppKey[Accountant] = web.AppKey("accountant")
PRICE_LOADER: web.AppKey[UpstreamPrices] = web.AppKey("price_loader")
HEALTH: web.AppKey[Health] = web.AppKey("health")
VERIFIER: web.AppKey[CallerVerifier] = web.AppKey("verifier")
KEYSTORE: web.AppKey[KeyStore] = web.AppKey("keystore")
AUTH: web.AppKey[KeyAuthenticator] = web.AppKey("auth")
BUDGETS: web.AppKey[BudgetGuard] = web.AppKey("budgets")
# The flow every cached endpoint's route runs (``proxy.pipeline``).
PIPELINE: web.AppKey[Pipeline] = web.AppKey("pipeline")
# The paid (cached, budgeted) endpoints the app registered: name -> route (``proxy.app.ENDPOINTS``),
# what a managed key's ``endpoints`` list may name.
PAID_ENDPOINTS: web.AppKey[Mapping[str, str]] = web.AppKey("paid_endpoints")
# Whether the state Redis is safe from eviction (`.safe`: True / False / None unknown), for readiness.
STATE_GUARD: web.AppKey[StateStoreGuard] = web.AppKey("state_guard")
# The operator console (only with PROXY_ADMIN_TOKEN): its image index, traffic stats, sessions.
IMAGE_INDEX: web.AppKey[ImageIndex] = web.AppKey("image_index")
TRAFFIC_STATS: web.AppKey[TrafficStats] = web.AppKey("traffic_stats")
CONSOLE_SESSIONS: web.AppKey[SessionStore] = web.AppKey("console_sessions")
LOGIN_LIMITER: web.AppKey[LoginLimiter] = web.AppKey("login_limiter")

# Per-request facts the metrics middleware reads after the handler ran.
REQUEST_MODEL: web.RequestKey[str] = web.RequestKey("model")
REQUEST_CACHE: web.RequestKey[str] = web.RequestKey("cache")
# The endpoint name (``Endpoint.name``, or "models") of a request a cached route handles; else "other".
REQUEST_ENDPOINT: web.RequestKey[str] = web.RequestKey("endpoint")
# The checked request target (``web.paths.parse_target``), set before any handler runs.
TARGET: web.RequestKey[Target] = web.RequestKey("target")
