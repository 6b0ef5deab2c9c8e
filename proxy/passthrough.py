"""Every other ``/v1/*`` route: forwarded unchanged and streamed both ways, never cached."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from proxy.errors import too_large
from proxy.keys import METRICS, SESSION, SETTINGS
from proxy.upstream import forward_headers, response_headers, upstream_failure


async def passthrough(request: web.Request) -> web.StreamResponse:
    """Forward method, path, query, headers and body; relay status, headers and body as they come."""
    settings = request.app[SETTINGS]
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise too_large(settings.max_body_bytes)
    url = f"{settings.upstream_base}/{request.match_info['tail']}"
    data = request.content if request.body_exists else None
    try:
        upstream = await request.app[SESSION].request(
            request.method,
            url,
            params=request.query,
            data=data,
            headers=forward_headers(request.headers, request.headers.get("Authorization")),
            allow_redirects=False,
        )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        request.app[METRICS].record_upstream_error(
            "timeout" if isinstance(exc, asyncio.TimeoutError) else "connect"
        )
        raise upstream_failure(exc) from exc
    async with upstream:
        response = web.StreamResponse(status=upstream.status, headers=response_headers(upstream.headers))
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            request.app[METRICS].record_upstream_error("stream_cut")
            return response
        await response.write_eof()
        return response
