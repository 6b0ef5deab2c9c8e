"""Wiring of managed keys and budgets into the app: the key store, authenticator and budget guard.

The composition root (``proxy.app``) plugs these contexts in; nothing in the web layer imports
this package.

Redis when configured (shared by every replica), else in-process stores with the same rules. The
state Redis is ``PROXY_STATE_REDIS_URL`` (default: the cache's Redis and its client); it must not
evict (``proxy.budget.state_store``), so the proxy refuses to start against one that may, whenever
managed keys can exist (not with ``PROXY_AUTH=passthrough``, nor in ``auto`` mode with neither
an admin token nor configured keys: then nothing could create state worth protecting).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.budget.guard import BudgetGuard
from proxy.budget.memory import MemoryBudgetLedger
from proxy.budget.redis import RedisBudgetLedger
from proxy.budget.state_store import StateClient, StateStoreGuard, open_state_client
from proxy.budget.types import DEFAULT_RESERVATION_TTL_S, BudgetLedger
from proxy.config import Settings
from proxy.keys.auth import KeyAuthenticator
from proxy.keys.redis import RedisKeyStore
from proxy.keys.store import KeyStore, MemoryKeyStore
from proxy.obs.health import STATE_STORE
from proxy.state import (
    ACCOUNTANT,
    AUTH,
    BUDGETS,
    HEALTH,
    KEYSTORE,
    METRICS,
    REDIS,
    SETTINGS,
    STATE_GUARD,
)

log = logging.getLogger(__name__)


def managed_keys_possible(settings: Settings) -> bool:
    """Whether this configuration can ever hold managed keys (and so state that must survive)."""
    if settings.auth == "passthrough":
        return False
    return settings.auth == "managed" or settings.admin_token is not None or bool(settings.keys)


async def refuse_evicting_state_ctx(app: web.Application) -> AsyncIterator[None]:
    """The first context: refuse to start against a state Redis that may evict (nothing is open
    yet, so nothing leaks); unreachable is not refused, the guard checks again later."""
    settings = app[SETTINGS]
    url = settings.state_url
    if url is not None and managed_keys_possible(settings) and not settings.allow_evicting_state_store:
        client = open_state_client(url, settings.store_timeout)
        try:
            guard = StateStoreGuard(
                client,
                app[HEALTH].reporter(STATE_STORE),
                timeout=settings.redis_op_timeout,
                allow_unsafe=False,
            )
            await guard.at_start()  # StateStoreUnsafe: the process exits, naming the setting
        finally:
            await client.aclose()
    yield


async def managed_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the key store and budget ledger (after the store context, which opens Redis)."""
    settings = app[SETTINGS]
    url = settings.state_url
    own: StateClient | None = None  # a client this context opened (and closes)
    client: StateClient | None = None
    if url is not None:
        shared = app.get(REDIS) if url == settings.redis_url else None
        client = shared if shared is not None else (own := open_state_client(url, settings.store_timeout))
    timeout = settings.redis_op_timeout
    guard = StateStoreGuard(
        client,
        app[HEALTH].reporter(STATE_STORE),
        timeout=timeout,
        allow_unsafe=settings.allow_evicting_state_store,
    )
    app[STATE_GUARD] = guard
    async with contextlib.AsyncExitStack() as stack:
        if own is not None:
            stack.push_async_callback(own.aclose)
        # A pure cache (no managed key can exist) may sit on any Redis: nothing to watch or log.
        if managed_keys_possible(settings):
            await guard.check()  # the verdict for readiness and the gauge, before the first request
            await stack.enter_async_context(guard.watching())
        await _open_keys_and_budgets(app, client, guard)
        yield


async def _open_keys_and_budgets(
    app: web.Application, client: StateClient | None, guard: StateStoreGuard
) -> None:
    settings = app[SETTINGS]
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
        allow_unpriced=settings.allow_unpriced_models,
        state=guard,
    )
    await auth.load_static()
    if (settings.keys or settings.auth == "managed") and settings.upstream_api_key is None:
        log.warning("managed keys are configured but PROXY_UPSTREAM_API_KEY is not set")
