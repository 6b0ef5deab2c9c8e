"""What the console's page reads and changes, as JSON under ``/ui/api/`` (session required).

Keys are listed, created, changed and revoked by the admin API's own handlers (``web.admin``):
same validation, same answers, same ``{"error": ...}`` shape. Images come from the image index
(``cache.index``), a page at a time; traffic from the bucketed stats (``obs.stats``).
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from aiohttp import web

from proxy.cache.index import ENTRY_ID, row_json
from proxy.console.thumbs import image_type, read_blob, thumbnail
from proxy.errors import ProxyError, bad_request
from proxy.state import CACHE, IMAGE_INDEX, SETTINGS, STORE, TRAFFIC_STATS

_SHA = re.compile(r"[0-9a-f]{64}")
PAGE_SIZE = 24


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 12 or not low <= int(raw) <= high:
        raise bad_request(f"'{name}' must be an integer from {low} to {high}.", param=name)
    return int(raw)


async def overview(request: web.Request) -> web.Response:
    """``GET /ui/api/overview``: hit ratio, requests, spent and saved, top models and keys."""
    stats = request.config_dict[TRAFFIC_STATS]
    hour = await stats.window(3600)
    day = await stats.window(86400)
    return _json({"hour": hour.to_json(), "day": day.to_json()})


async def images(request: web.Request) -> web.Response:
    """``GET /ui/api/images?offset=N&limit=M``: cached image answers, newest first."""
    offset = _int_param(request, "offset", 0, 0, 10_000_000)
    limit = _int_param(request, "limit", PAGE_SIZE, 1, 100)
    rows, total = await request.config_dict[IMAGE_INDEX].page(offset, limit)
    now = time.time()
    after = offset + limit
    return _json(
        {
            "object": "list",
            "data": [row_json(row, now) for row in rows],
            "offset": offset,
            "limit": limit,
            "total": total,
            "next_offset": after if after < total else None,
        }
    )


async def purge_image(request: web.Request) -> web.Response:
    """``POST /ui/api/images/purge`` ``{"id": "{namespace}:{digest}"}``: the next identical request
    is a MISS (on every replica: the entry is gone from the store, hot copies revalidate)."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON.") from None
    row_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(row_id, str) or not ENTRY_ID.fullmatch(row_id):
        raise bad_request("'id' must be an entry id from the image list.", param="id")
    index = request.config_dict[IMAGE_INDEX]
    deleted = await request.config_dict[CACHE].purge_key(index.entry_key(row_id))
    await index.forget([row_id])
    return _json({"deleted": deleted, "id": row_id})


def _blob_params(request: web.Request) -> tuple[str, int]:
    sha = request.match_info["sha256"]
    if not _SHA.fullmatch(sha):
        raise ProxyError(404, "No such image.", code="image_not_found")
    limit = request.config_dict[SETTINGS].cache_max_entry_bytes
    return sha, _int_param(request, "size", 0, 1, limit)


async def thumb(request: web.Request) -> web.Response:
    """``GET /ui/api/thumbs/{sha256}?size=N``: the image's WebP thumbnail (made on first view)."""
    sha, size = _blob_params(request)
    ttl = _int_param(request, "ttl", 3600, 60, 366 * 86400)
    data = await thumbnail(request.config_dict[CACHE], request.config_dict[STORE], sha, size, ttl)
    if data is None:
        raise ProxyError(404, "No such image (expired or evicted).", code="image_not_found")
    return web.Response(body=data, content_type="image/webp")


async def full_image(request: web.Request) -> web.Response:
    """``GET /ui/api/blobs/{sha256}?size=N``: the image itself, typed by its magic bytes.

    Served so that it can never run as a page: sandboxing CSP, ``nosniff`` (set for every console
    answer), and a type only from the bytes; anything that is not a known image is a download.
    """
    sha, size = _blob_params(request)
    data = await read_blob(request.config_dict[CACHE], sha, size)
    if data is None:
        raise ProxyError(404, "No such image (expired or evicted).", code="image_not_found")
    kind = image_type(data)
    disposition = f'inline; filename="{sha[:16]}"' if kind else f'attachment; filename="{sha[:16]}.bin"'
    return web.Response(
        body=data,
        content_type=kind or "application/octet-stream",
        headers={
            "Content-Disposition": disposition,
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )
