"""Every other ``/v1/*`` route: forwarded and streamed both ways, never cached; a managed key
only on the routes allowed to it (``keys.routes``).

The upstream URL is the configured base plus the checked raw path and the raw query
(``web.paths.Target``), sent with ``encoded=True`` so nothing between here and the socket
re-normalises it. The body is streamed with the same limit as everywhere else, counted as it
goes, because a chunked body announces no length.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from yarl import URL

from proxy.errors import endpoint_not_allowed, too_large, upstream_failure
from proxy.keys.auth import bearer_of
from proxy.keys.routes import allowed_for, managed_route
from proxy.obs.logs import clip
from proxy.state import AUTH, METRICS, PAID_ENDPOINTS, SESSION, SETTINGS, TARGET
from proxy.upstream.session import forward_headers, response_headers
from proxy.web.server import close_after_response


class _BodyTooLarge(Exception):
    """The streamed request body went over ``PROXY_MAX_BODY_BYTES``."""


async def _bounded(content: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """The request body, failing once more than ``limit`` bytes arrived.

    Raising here makes aiohttp abort the upstream request mid-body: for a chunked upload the
    upstream never sees the terminating chunk, so it never has a complete request to act on.
    """
    seen = 0
    async for chunk in content.iter_any():
        seen += len(chunk)
        if seen > limit:
            raise _BodyTooLarge
        yield chunk


def upstream_url(base: str, request: web.Request) -> URL:
    """``base`` (``.../v1``) + the checked path below ``/v1`` + the raw query, not re-encoded."""
    target = request[TARGET]
    return URL(base + target.raw[len("/v1") :], encoded=True)


async def passthrough(request: web.Request, authorization: str | None) -> web.StreamResponse:
    """Forward method, path, query, headers and body; relay status, headers and body as they come."""
    settings = request.app[SETTINGS]
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        close_after_response(request)
        raise too_large(limit)
    data = _bounded(request.content, limit) if request.body_exists else None
    try:
        upstream = await request.app[SESSION].request(
            request.method,
            upstream_url(settings.upstream_base, request),
            data=data,
            headers=forward_headers(request.headers, authorization),
            allow_redirects=False,
        )
    except (_BodyTooLarge, TimeoutError, aiohttp.ClientError, OSError) as exc:
        # aiohttp (3.14) reports a failing body as ClientConnectionError caused by it.
        if isinstance(exc, _BodyTooLarge) or isinstance(exc.__cause__, _BodyTooLarge):
            close_after_response(request)
            raise too_large(limit) from None
        request.app[METRICS].record_upstream_error(
            "timeout" if isinstance(exc, asyncio.TimeoutError) else "connect"
        )
        raise upstream_failure(exc) from exc
    async with upstream:
        response = web.StreamResponse(status=upstream.status, headers=response_headers(upstream.headers))
        return await stream_through(request, upstream, response)


async def stream_through(
    request: web.Request, upstream: aiohttp.ClientResponse, response: web.StreamResponse, head: bytes = b""
) -> web.StreamResponse:
    """Send ``response``'s head, ``head`` (body bytes already read) and the rest of the upstream
    body as it comes; a body cut short is counted (``stream_cut``) and ends the answer there."""
    await response.prepare(request)
    if head:
        await response.write(head)
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except (TimeoutError, aiohttp.ClientError, ConnectionError):
        request.app[METRICS].record_upstream_error("stream_cut")
        return response
    await response.write_eof()
    return response


async def managed_passthrough(request: web.Request) -> web.StreamResponse:
    """Other ``/v1/*`` routes: pass-through callers as before; managed keys only on allowed routes."""
    auth = request.app[AUTH]
    key = await auth.resolve(bearer_of(request.headers))
    if key is None:
        return await passthrough(request, request.headers.get("Authorization"))
    path = request[TARGET].path
    if managed_route(request.method, path) is None:
        # Only routes the proxy meters (its paid endpoints) or that cost nothing (the model list).
        what = f"{clip(request.method, 16)} {clip(path)}"
        raise endpoint_not_allowed(what, allowed_for(key, request.app[PAID_ENDPOINTS]))
    return await passthrough(request, auth.upstream_authorization())
