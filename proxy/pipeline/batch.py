"""The batch flow: a request made of independently cached items (a ``BatchEndpoint``: embeddings).

identify (``Pipeline.identify``, once) → split into unique items, one entry key each → find them all
(hot tier, then one MGET) → all cached: answer from the cache, no upstream call → otherwise join or
lead the flight of the whole request (identical concurrent requests make one upstream call) →
``batch_miss``: reserve for the missing items only, forward them as one request, store each new
item (one round trip), account and settle once, end the flight, answer in input order.

Different batches that share items do not share flights: per-item locks would cost a round trip
per item on every miss, so two concurrent batches may both fetch an item they have in common.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from proxy.cache.items import ItemCache
from proxy.flight.results import RETRY, Leadership
from proxy.obs.usage import Usage
from proxy.pipeline.batch_items import Batch, Items
from proxy.pipeline.batch_miss import STORED, BatchMisses
from proxy.state import REQUEST_CACHE
from proxy.storage.base import StoreUnavailable

if TYPE_CHECKING:
    from proxy.cache.entry import CachedEntry
    from proxy.endpoints.base import BatchEndpoint
    from proxy.pipeline.flow import Call
    from proxy.pipeline.miss import Misses
    from proxy.pipeline.services import Services

log = logging.getLogger(__name__)


class Batches:
    """Serves a batch endpoint's requests with the pipeline's services."""

    def __init__(self, services: Services, misses: Misses) -> None:
        self.services = services
        self.items = ItemCache(services.cache)
        self.misses = BatchMisses(services, misses, self.items, self.saved)

    async def serve(self, request: web.Request, call: Call, endpoint: BatchEndpoint) -> web.StreamResponse:
        """Answer from the cache where every item is cached; else fetch the missing items (once for
        identical concurrent requests) and merge."""
        services = self.services
        items = Items.of(call, endpoint, services.cache.entry_key)
        batch = Batch(request, call, endpoint, items, [None] * len(items.keys))
        cacheable = call.namespace is not None and call.parsed.cacheable
        can_store = cacheable and call.controls.store
        if not cacheable or not call.controls.lookup:
            return await self.misses.forward(batch, "BYPASS", store=can_store, looked_up=False)
        try:
            token = await self.find(batch, lead_on_miss=can_store)
        except StoreUnavailable as exc:
            log.warning("cache lookup failed, bypassing: %s", exc)
            services.metrics.store_errors.labels("get").inc()
            return await self.misses.forward(batch, "BYPASS", store=False)
        if batch.cached:
            return await self.serve_cached(batch, "HIT")
        if not can_store:
            return await self.misses.forward(batch, "MISS", store=False)
        return await self.fly(batch, token)

    async def find(self, batch: Batch, *, lead_on_miss: bool) -> str | None:
        """Every item's entry (hot tier, then one MGET); raises StoreUnavailable.

        A request of one item that may lead, on plain Redis, reads its entry or takes the flight's
        lock in one round trip, as ``Pipeline.find`` does; the lock token is returned for ``join``.
        """
        call, keys, max_age = batch.call, batch.items.keys, batch.call.controls.max_age
        cache, flights = self.services.cache, self.services.flights
        if lead_on_miss and len(keys) == 1 and flights.claims and cache.fresh(keys[0], max_age) is None:
            claim = await flights.claim(call.digest, keys[0])
            batch.found = [await cache.open(keys[0], claim.record, max_age)]
            return claim.token
        batch.found = await self.items.find(keys, max_age)
        return None

    async def fly(self, batch: Batch, token: str | None) -> web.StreamResponse:
        """Lead the flight of this request, or wait for the identical one in flight and read what
        it stored (fetching whatever is still missing without a flight)."""
        services, call, items = self.services, batch.call, batch.items
        # The flight's "entry" is the first missing item: a remote leader's outcome is known stored
        # when it is, and taking the lock tells whether a previous flight just stored it.
        first = items.keys[batch.missing[0]]
        joined = await services.flights.join(call.digest, first, lambda: self._quiet_find(first, call), token)
        if isinstance(joined, Leadership):
            return await self.lead(batch, joined)
        if joined.kind == "error":
            return self.misses.shared_error(batch, joined.status, joined.body)
        await self._refind(batch)
        if batch.cached:
            return await self.serve_cached(batch, "HIT" if joined.late else "COALESCED")
        return await self.misses.forward(batch, "MISS", store=True)

    async def lead(self, batch: Batch, leadership: Leadership) -> web.StreamResponse:
        """Fetch for everyone waiting on an identical request; the flight always ends."""
        flights = self.services.flights
        try:
            if not leadership.entry_absent:  # the previous flight may have stored them meanwhile
                await self._refind(batch)
                if batch.cached:
                    await flights.finish(leadership, STORED)
                    return await self.serve_cached(batch, "HIT")
            return await self.misses.forward(batch, "MISS", store=True, leadership=leadership)
        finally:
            await flights.finish(leadership, RETRY)  # a no-op when it already ended

    async def _quiet_find(self, key: str, call: Call) -> CachedEntry | None:
        try:
            return (await self.items.find([key], call.controls.max_age))[0]
        except StoreUnavailable:
            return None

    async def _refind(self, batch: Batch) -> None:
        """Look the missing items up again (they stay missing if the store fails)."""
        missing = batch.missing
        try:
            again = await self.items.find([batch.items.keys[u] for u in missing], batch.call.controls.max_age)
        except StoreUnavailable:
            return
        for unique, entry in zip(missing, again, strict=True):
            batch.found[unique] = entry

    async def serve_cached(self, batch: Batch, result: str) -> web.StreamResponse:
        """Every item from the cache, for a caller the upstream accepts; accounted as savings."""
        services, call, request = self.services, batch.call, batch.request
        if (refusal := await services.refusal(call.bearer, call.secret)) is not None:
            request[REQUEST_CACHE] = "none"
            return refusal
        await self.saved(batch, {})
        request[REQUEST_CACHE] = result
        services.metrics.accept_model(call.model)  # only an upstream 2xx is ever stored
        services.metrics.record_cache_result(call.model, result, endpoint=call.endpoint.name)
        headers = batch.headers(result)
        now = time.time()
        headers["Age"] = str(max(batch.entry(unique).age(now) for unique in range(len(batch.found))))
        positions = batch.items.positions
        model = batch.entry(positions[0]).meta.model or call.model
        values = [batch.entry(unique).json_body() for unique in positions]
        body = batch.endpoint.merge(values, model, Usage())
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def saved(self, batch: Batch, fetched: dict[int, int]) -> None:
        """Account what the cache (and answering a repeated item once) saved this request."""
        tokens = batch.unpaid_tokens(fetched)
        if tokens is None:
            return
        call, usage = batch.call, Usage(prompt_tokens=tokens)
        saved = self.services.accountant.saved(call.model, call.alias, usage, endpoint=call.endpoint.name)
        if call.managed is not None:
            await self.services.budgets.on_hit(call.managed, call.model, usage, saved)
