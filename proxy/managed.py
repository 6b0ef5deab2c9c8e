"""Wiring of managed keys into the app: the key store, authenticator and budget guard, and the
non-chat ``/v1/*`` route for managed callers.

Redis when configured (shared by every replica), else in-process stores with the same rules.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.auth import KeyAuthenticator
from proxy.budget import DEFAULT_RESERVATION_TTL_S, BudgetLedger, MemoryBudgetLedger, RedisBudgetLedger
from proxy.budget_guard import BudgetGuard
from proxy.errors import ProxyError
from proxy.handlers import bearer_of
from proxy.keys import ACCOUNTANT, AUTH, BUDGETS, KEYSTORE, METRICS, REDIS, SETTINGS, TARGET
from proxy.keystore import KeyStore, MemoryKeyStore
from proxy.keystore_redis import RedisKeyStore
from proxy.logs import clip
from proxy.passthrough import passthrough
from proxy.routes import managed_route

log = logging.getLogger(__name__)


async def managed_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the key store and budget ledger (after the store context, which opens Redis)."""
    settings = app[SETTINGS]
    client = app.get(REDIS)
    store: KeyStore
    ledger: BudgetLedger
    if client is not None:
        store = RedisKeyStore(client, settings.redis_prefix)
        ledger = RedisBudgetLedger(client, settings.redis_prefix)
    else:
        store, ledger = MemoryKeyStore(), MemoryBudgetLedger()
    timeout = settings.redis_op_timeout
    auth = KeyAuthenticator(store, settings, timeout=timeout)
    app[KEYSTORE] = store
    app[AUTH] = auth
    app[BUDGETS] = BudgetGuard(
        ledger,
        app[ACCOUNTANT],
        app[METRICS],
        timeout=timeout,
        # A reservation must outlive the slowest request it covers, or it would turn into spend
        # while the request is still running.
        reservation_ttl_s=max(DEFAULT_RESERVATION_TTL_S, int(settings.upstream_timeout * 2) + 60),
        fail_closed=settings.budget_fail_closed,
        charge_hits=settings.charge_cache_hits,
    )
    await auth.load_static()
    if (settings.keys or settings.auth == "managed") and settings.upstream_api_key is None:
        log.warning("managed keys are configured but PROXY_UPSTREAM_API_KEY is not set")
    yield


def endpoint_not_allowed(path: str) -> ProxyError:
    """403: a managed key may only reach routes the proxy meters (or that cost nothing)."""
    return ProxyError(
        403,
        f"Managed keys cannot call {clip(path)} through this proxy; only chat completions and models.",
        type="invalid_request_error",
        code="endpoint_not_allowed",
    )


async def managed_passthrough(request: web.Request) -> web.StreamResponse:
    """Other ``/v1/*`` routes: pass-through callers as before; managed keys only on allowed routes."""
    auth = request.app[AUTH]
    key = await auth.resolve(bearer_of(request))
    if key is None:
        return await passthrough(request, request.headers.get("Authorization"))
    path = request[TARGET].path
    if managed_route(request.method, path) is None:
        raise endpoint_not_allowed(path)
    return await passthrough(request, auth.upstream_authorization())
