"""The operator's routes: ``/healthz`` (alive), ``/readyz`` (can serve; what is degraded) and
``/metrics`` (Prometheus), plus the background store probe that keeps readiness current."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.errors import ProxyError
from proxy.keys.auth import bearer_matches
from proxy.obs.health import STORE, Health
from proxy.obs.metrics import render_latest
from proxy.state import CACHE, HEALTH, MULTIPROC_DIR, REGISTRY, SETTINGS
from proxy.storage.base import ByteStore

# How often the store is pinged in the background, so the gauge is current between probes.
STORE_PROBE_INTERVAL_S = 5.0


async def healthz(request: web.Request) -> web.Response:
    """Process is alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """This replica can serve: 200 (body says what is degraded, e.g. the store), 503 while draining."""
    health = request.app[HEALTH]
    await probe_store(health, request.app[CACHE].store)
    status, body = health.readiness()
    return web.json_response(body, status=status)


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus exposition; aggregated over workers in multiprocess mode.

    It shows key aliases, spend and remaining budgets: with ``PROXY_METRICS_TOKEN`` set it needs
    that bearer token (compared in constant time).
    """
    token = request.app[SETTINGS].metrics_token
    if token is not None and not bearer_matches(request.headers, token):
        raise ProxyError(
            401,
            "A valid metrics token is required (Authorization: Bearer $PROXY_METRICS_TOKEN).",
            code="invalid_metrics_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    body, content_type = render_latest(request.app[REGISTRY], request.app.get(MULTIPROC_DIR))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def probe_store(health: Health, store: ByteStore) -> None:
    """Ping the cache store (bounded by its timeout) and report the result."""
    health.report(STORE, None if await store.ping() else "unreachable")


@contextlib.asynccontextmanager
async def watching_store(
    health: Health, store: ByteStore, interval: float = STORE_PROBE_INTERVAL_S
) -> AsyncIterator[None]:
    """Keep the store's health current in the background while the app runs."""

    async def watch() -> None:
        # The first probe waits one interval: /readyz probes on demand, and the start-up of the
        # app (connections, the flight listener's SUBSCRIBE) should not race an extra ping.
        while True:
            await asyncio.sleep(interval)
            await probe_store(health, store)

    task = asyncio.create_task(watch(), name="store-health")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
