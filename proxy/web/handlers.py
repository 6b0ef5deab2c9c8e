"""Route handlers: chat completions (cached), other ``/v1/*`` (forwarded), health and metrics."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from aiohttp import web

from proxy.cache.keys import bearer_namespace, safe_namespace
from proxy.cache.response import CachedEntry
from proxy.config import Secret, Settings
from proxy.errors import too_large
from proxy.obs.health import probe_store
from proxy.state import CACHE, HEALTH, METRICS, REQUEST_CACHE, REQUEST_MODEL
from proxy.upstream.relay import ClientWriter

log = logging.getLogger(__name__)

CHAT_ROUTE = "/v1/chat/completions"


def bearer_of(request: web.Request) -> str | None:
    """The caller's bearer token, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def bearer_matches(request: web.Request, secret: Secret) -> bool:
    """Whether the caller presented ``secret`` as its bearer token (constant-time comparison)."""
    presented = bearer_of(request) or ""
    return hmac.compare_digest(presented.encode(), secret.value.encode())


def key_alias(bearer: str | None) -> str | None:
    """A label for a pass-through caller: a short hash, never the secret."""
    return None if bearer is None else "pt-" + hashlib.sha256(bearer.encode()).hexdigest()[:10]


def cache_namespace(settings: Settings, bearer: str | None, requested: str | None) -> str | None:
    """Where this caller's entries live; None means the request is not cached at all.

    A request without a bearer never gets or makes cached answers: nothing would stop it from
    reading what a paying tenant stored.
    """
    if bearer is None:
        return None
    base = "shared" if settings.cache_scope == "shared" else bearer_namespace(bearer)
    if requested:
        return f"{base}.{safe_namespace(requested)}"
    return base


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing oversize bodies with 413 before (or while) reading them."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None


async def serve_entry(
    request: web.Request,
    entry: CachedEntry,
    *,
    stream: bool,
    usage_asked: bool,
    digest: str,
    result: str,
) -> web.StreamResponse:
    """Answer from a cached entry, as JSON or as a replayed SSE stream."""
    request[REQUEST_CACHE] = result
    metrics = request.app[METRICS]
    metrics.accept_model(request[REQUEST_MODEL])  # only an upstream 2xx is ever stored
    metrics.record_cache_result(request[REQUEST_MODEL], result)
    headers = {"X-Cache": result, "Age": str(entry.age(time.time())), "X-Cache-Key": digest}
    if not stream:
        body = entry.json_body()
        return web.Response(body=body, content_type="application/json", headers=headers)
    response = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    parts = entry.sse_parts(usage_asked)  # checked before the status line goes out
    # A client that goes away mid-replay is normal (it has what it needed): stop quietly.
    writer = ClientWriter(response)
    await writer.prepare(request)
    for part in parts:
        await writer.write(part)
        if writer.gone:
            break
    await writer.finish()
    return response


async def healthz(request: web.Request) -> web.Response:
    """Process is alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """This replica can serve: 200 (body says what is degraded, e.g. the store), 503 while draining."""
    health = request.app[HEALTH]
    await probe_store(health, request.app[CACHE].store)
    status, body = health.readiness()
    return web.json_response(body, status=status)
