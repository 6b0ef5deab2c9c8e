"""Typed application state keys (``web.AppKey``), one per shared resource."""

from __future__ import annotations

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.budget.guard import BudgetGuard
from proxy.budget.state_store import StateStoreGuard
from proxy.cache.response import ResponseCache
from proxy.config import Settings
from proxy.flight.flights import SingleFlight
from proxy.keys.auth import KeyAuthenticator
from proxy.keys.store import KeyStore
from proxy.keys.verify import CallerVerifier
from proxy.obs.accounting import Accountant
from proxy.obs.health import Health
from proxy.obs.metrics import ProxyMetrics
from proxy.storage.base import ByteStore
from proxy.web.paths import Target

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
SESSION = web.AppKey("session", aiohttp.ClientSession)
STORE = web.AppKey("store", ByteStore)
CACHE = web.AppKey("cache", ResponseCache)
METRICS = web.AppKey("metrics", ProxyMetrics)
ACCOUNTANT = web.AppKey("accountant", Accountant)
FLIGHTS = web.AppKey("flights", SingleFlight)
VERIFIER = web.AppKey("verifier", CallerVerifier)
# A plain or a cluster client: every consumer only runs single-slot scripts and commands.
REDIS: web.AppKey[aioredis.Redis | aioredis.RedisCluster] = web.AppKey("redis")
KEYSTORE = web.AppKey("keystore", KeyStore)
AUTH = web.AppKey("auth", KeyAuthenticator)
BUDGETS = web.AppKey("budgets", BudgetGuard)
# Whether the state Redis is safe from eviction (`.safe`: True / False / None unknown), for readiness.
STATE_GUARD = web.AppKey("state_guard", StateStoreGuard)
HEALTH = web.AppKey("health", Health)

# Per-request facts the metrics middleware reads after the handler ran.
REQUEST_MODEL = web.RequestKey("model", str)
REQUEST_CACHE = web.RequestKey("cache", str)
# The checked request target (``paths.parse_target``), set before any handler runs.
TARGET = web.RequestKey("target", Target)
