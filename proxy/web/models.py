"""``GET /v1/models`` and ``GET /v1/models/{id}``: the upstream's model list, cached per cache scope.

SDKs ask for the model list at start-up and often before every job; the list is free upstream but
costs a round trip, and it changes rarely. It is kept ``PROXY_MODELS_TTL`` seconds (60 by default;
0 passes it through), per caller the way every entry is (``PROXY_CACHE_SCOPE``: each bearer or
managed key namespace its own entry, or one for everybody in ``shared`` scope): two tenants may see
different lists (a gateway filters models per key), and a cached list is never shown to a caller
the upstream would refuse (``Services.refusal``, as for any hit).

Not an ``Endpoint`` of the pipeline: it is a ``GET`` with the model id in the path, costs nothing
(no demand, no reservation, no price) and has no stream, blobs or flight worth sharing (concurrent
first requests each fetch the list; it is small and free). It reuses what the pipeline uses: the
namespaces of ``cache.keys``, the entry format of ``ResponseCache``, the caller checks.
Only a 200 ``application/json`` object is stored; anything else (errors, other types, a list over
``PROXY_CACHE_MAX_ENTRY_BYTES``) is relayed as it came.
"""

from __future__ import annotations

import logging
import time

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.cache.controls import CacheControls
from proxy.cache.keys import cache_hash, managed_namespace, passthrough_namespace
from proxy.errors import upstream_failure
from proxy.keys.auth import bearer_of
from proxy.obs.usage import Usage
from proxy.state import METRICS, PIPELINE, REQUEST_CACHE, REQUEST_ENDPOINT, SETTINGS, TARGET
from proxy.storage.base import StoreUnavailable
from proxy.upstream.session import forward_headers, response_headers
from proxy.web.passthrough import passthrough, stream_through, upstream_url

log = logging.getLogger(__name__)

MODELS = "models"  # the endpoint name in metrics, and the key scope of its entries
_NO_USAGE = Usage(0, 0)


async def models(request: web.Request) -> web.StreamResponse:
    """Serve the model list from this caller's cache scope, or fetch it upstream (and keep a 200)."""
    request[REQUEST_ENDPOINT] = MODELS
    settings = request.app[SETTINGS]
    services = request.app[PIPELINE].services
    bearer = bearer_of(request.headers)
    managed = await services.auth.resolve(bearer)  # 401 for an unknown managed key, as everywhere
    authorization = (
        services.auth.upstream_authorization()
        if managed is not None
        else request.headers.get("Authorization")
    )
    controls = CacheControls.from_headers(request.headers)
    if managed is not None:
        bearer = None  # the proxy's own key goes upstream; the key registry vouched for the caller
        namespace: str | None = managed_namespace(managed, settings.cache_scope, controls.namespace)
    else:
        namespace = passthrough_namespace(settings.cache_scope, bearer, controls.namespace)
    if settings.models_ttl <= 0 or namespace is None:
        return await passthrough(request, authorization)
    cache = services.cache
    # The path and query as received: /v1/models and /v1/models/{id} are different entries.
    digest = cache_hash({"target": request[TARGET].raw}, namespace, MODELS)
    key = cache.entry_key(namespace, digest)
    result = "MISS"
    if controls.lookup:
        try:
            entry = await cache.lookup(key, controls.max_age)
        except StoreUnavailable as exc:
            log.warning("model list lookup failed, bypassing: %s", exc)
            request.app[METRICS].store_errors.labels("get").inc()
            entry, result = None, "BYPASS"
        if entry is not None:
            if (refusal := await services.refusal(bearer)) is not None:
                return refusal
            _count(request, "HIT")
            hit = {"X-Cache": "HIT", "Age": str(entry.age(time.time())), "X-Cache-Key": digest}
            return web.Response(body=entry.json_body(), content_type="application/json", headers=hit)
    _count(request, result)
    fetched = await _fetch(request, authorization, settings.cache_max_entry_bytes, digest, result)
    status = fetched.status if isinstance(fetched, web.StreamResponse) else fetched[0]
    if status == 200 and bearer is not None:
        await services.verifier.mark(bearer)
    if isinstance(fetched, web.StreamResponse):
        return fetched  # over the entry limit: relayed as it came, not stored
    _, headers, body = fetched
    doc = _json_object(status, headers, body)
    if doc is not None and result == "MISS" and controls.store:
        ttl = min(controls.ttl or settings.models_ttl, settings.models_ttl)
        await cache.put(key, body, doc, ttl=ttl, walk=lambda _doc: [], usage=_NO_USAGE)  # never raises
    return web.Response(status=status, body=body, headers=headers)


def _count(request: web.Request, result: str) -> None:
    request[REQUEST_CACHE] = result
    request.app[METRICS].record_cache_result("none", result, endpoint=MODELS)


async def _fetch(
    request: web.Request, authorization: str | None, limit: int, digest: str, result: str
) -> tuple[int, CIMultiDict[str], bytes] | web.StreamResponse:
    """The upstream's answer read whole, to store; one over ``limit`` (the largest entry the cache
    keeps) is relayed to the client as it comes instead, and its response returned."""
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    try:
        upstream = await request.app[PIPELINE].services.session.get(
            upstream_url(settings.upstream_base, request),
            headers=forward_headers(request.headers, authorization),
            allow_redirects=False,
        )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        metrics.record_upstream_error("timeout" if isinstance(exc, TimeoutError) else "connect")
        raise upstream_failure(exc) from exc
    async with upstream:
        headers = response_headers(upstream.headers)
        headers.update({"X-Cache": result, "X-Cache-Key": digest})
        kept = bytearray()
        try:
            async for chunk in upstream.content.iter_any():
                kept += chunk
                if len(kept) > limit:
                    return await _relay_rest(request, upstream, headers, bytes(kept))
        except (TimeoutError, aiohttp.ClientError) as exc:
            metrics.record_upstream_error("timeout" if isinstance(exc, TimeoutError) else "stream_cut")
            raise upstream_failure(exc) from exc
        return upstream.status, headers, bytes(kept)


async def _relay_rest(
    request: web.Request, upstream: aiohttp.ClientResponse, headers: CIMultiDict[str], head: bytes
) -> web.StreamResponse:
    """Send what was read and stream the rest through (a list too large to keep is still the
    client's answer)."""
    log.warning("upstream model list over PROXY_CACHE_MAX_ENTRY_BYTES: relayed, not cached")
    return await stream_through(
        request, upstream, web.StreamResponse(status=upstream.status, headers=headers), head
    )


def _json_object(status: int, headers: CIMultiDict[str], body: bytes) -> dict[str, object] | None:
    """The answer as a JSON object if it is one worth keeping (a 200 ``application/json``)."""
    if status != 200 or not headers.get("Content-Type", "").lower().startswith("application/json"):
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None
