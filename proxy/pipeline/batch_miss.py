"""A batch's missing items, from the upstream on: reserve → forward → store → account → settle → answer.

Only the missing items go upstream, once each, as one request with every other field unchanged.
When nothing was cached and nothing repeats, that is the client's own request and its answer is
relayed live, exactly as the upstream sent it; otherwise the sub-request's answer is read whole
(up to ``PROXY_CACHE_MAX_ENTRY_BYTES``) and merged with the cached items. Each new item is stored
before the flight ends and before the client gets the end of its answer, so whoever asks next —
with the same batch or any other holding these items — finds them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from proxy.cache.items import ItemAnswer, ItemCache
from proxy.errors import ProxyError, upstream_invalid_response
from proxy.flight.results import RETRY, FlightResult, Leadership
from proxy.obs.metrics import SKIPPED
from proxy.obs.usage import Usage
from proxy.pipeline.miss import SHAREABLE_ERRORS
from proxy.state import REQUEST_CACHE
from proxy.upstream.fetch import fetch_whole
from proxy.upstream.relay import ClientWriter, MissOutcome, forward_miss
from proxy.upstream.session import forward_headers

if TYPE_CHECKING:
    from proxy.endpoints.base import BatchAnswer, Parsed
    from proxy.pipeline.batch_items import Batch
    from proxy.pipeline.miss import Misses
    from proxy.pipeline.services import Services

log = logging.getLogger(__name__)

# How a batch flight ends when its items are stored: followers read them from the cache.
STORED = FlightResult("stored")


class BatchMisses:
    """Fetches a batch's missing items and does everything their answer calls for."""

    def __init__(
        self,
        services: Services,
        misses: Misses,
        items: ItemCache,
        saved: Callable[[Batch, dict[int, int]], Awaitable[None]],
    ) -> None:
        self.services = services
        self.misses = misses  # for what every upstream call settles the same way
        self.items = items
        self.saved = saved

    async def forward(
        self,
        batch: Batch,
        result: str,
        *,
        store: bool,
        leadership: Leadership | None = None,
        looked_up: bool = True,
    ) -> web.StreamResponse:
        """Fetch the missing items, store them, settle, end the flight (if led), answer."""
        services, call = self.services, batch.call
        endpoint, request = batch.endpoint, batch.request
        sub, verbatim = self._sub_request(batch)
        reservation = None
        if call.managed is not None:  # 429 here, before anything is forwarded: the missing items only
            admitted = await services.budgets.reserve(call.managed, call.model, endpoint.demand(sub))
            reservation = admitted.reservation
        request[REQUEST_CACHE] = result
        counted = result if looked_up else SKIPPED  # see flow.Miss
        services.metrics.record_cache_result(call.model, counted, endpoint=call.endpoint.name)
        headers = batch.headers(result)
        try:
            writer, passed_on, outcome = await self._call(batch, sub, headers, verbatim=verbatim)
        except ProxyError:
            if call.managed is not None:  # the upstream never answered: nothing was billed
                await services.budgets.release(call.managed, reservation)
            raise
        answer = self._read(batch, sub, outcome, verbatim)
        await self.misses.settle(call, outcome, endpoint.usage(sub, outcome.usage, None), reservation)
        order = batch.items.positions if verbatim else batch.missing  # the unique item of each answer
        ending = await self._store(batch, answer, order) if store and answer is not None else RETRY
        if (shared := outcome.shared_error(SHAREABLE_ERRORS)) is not None:
            ending = FlightResult("error", status=shared[0], body=shared[1])
        if leadership is not None:
            leadership.answered = True  # whoever joins now finds what was stored: a hit
            await services.flights.finish(leadership, ending)
        if writer is not None:
            if outcome.tail:  # the JSON answer, held back by the relay
                await writer.write(outcome.tail)
            await writer.finish()
            return writer.response
        if outcome.invalid:
            return web.Response(
                status=502, body=outcome.error_body, content_type="application/json", headers=headers
            )
        if answer is None:  # the upstream's error, as it sent it
            passed_on.update(headers)
            return web.Response(status=outcome.status, body=outcome.error_body, headers=passed_on)
        return await self._merged(batch, answer, headers)

    def _sub_request(self, batch: Batch) -> tuple[Parsed, bool]:
        """What goes upstream, and whether it is the client's own request (relayed live): the
        missing items, or the request as sent when nothing was cached and nothing repeats, or when
        the missing items' answer could exceed ``PROXY_CACHE_MAX_ENTRY_BYTES`` (too large to hold
        and merge: the request then uses nothing from the cache)."""
        call, items, missing = batch.call, batch.items, batch.missing
        if len(missing) == len(items.positions):
            return call.parsed, True
        sub = batch.endpoint.subset(call.parsed, [items.values[unique] for unique in missing])
        if batch.endpoint.answer_bound(sub) <= self.services.settings.cache_max_entry_bytes:
            return sub, False
        batch.found = [None] * len(batch.found)
        return call.parsed, True

    async def _call(
        self, batch: Batch, sub: Parsed, headers: dict[str, str], *, verbatim: bool
    ) -> tuple[ClientWriter | None, CIMultiDict[str], MissOutcome]:
        """Send ``sub`` upstream: the client's own request is relayed live (writer), a sub-request
        read whole (the headers to pass on with an error). Raises ProxyError (502/504)."""
        services, settings, request = self.services, self.services.settings, batch.request
        authorization = request.headers.get("Authorization")
        if batch.call.managed is not None:
            authorization = services.auth.upstream_authorization()
        url = f"{settings.upstream_base}{batch.endpoint.upstream_path}"
        body = batch.endpoint.forward_body(sub, {})
        sent = forward_headers(request.headers, authorization)
        limit = settings.cache_max_entry_bytes
        if not verbatim:
            passed_on, outcome = await fetch_whole(
                services.session, url=url, body=body, headers=sent, limit=limit
            )
            return None, passed_on, outcome
        writer, outcome = await forward_miss(
            request,
            session=services.session,
            url=url,
            body=body,
            headers=sent,
            extra_headers=headers,
            complete=batch.endpoint.complete,
            fold=None,
            keep_limit=limit,
            finish_on_disconnect=settings.finish_on_disconnect,
        )
        return writer, CIMultiDict(), outcome

    def _read(self, batch: Batch, sub: Parsed, outcome: MissOutcome, verbatim: bool) -> BatchAnswer | None:
        """The items of a 200 answer; None for any other. An answer that cannot be taken apart is
        a 502 unless the client already has it as the upstream sent it (it is not stored)."""
        if outcome.status != 200 or outcome.raw is None:
            return None
        try:
            answer = batch.endpoint.read_answer(sub, outcome.raw)
        except ValueError as exc:
            log.warning("%s answer not taken apart: %s", batch.endpoint.name, exc)
            if not verbatim:
                outcome.invalid = True
                outcome.error_kind = "invalid_response"
                outcome.error_body = upstream_invalid_response().body()
            return None
        if outcome.usage is None and answer.usage is not None:
            outcome.usage = dict(answer.usage)
        return answer

    async def _store(self, batch: Batch, answer: BatchAnswer, order: Sequence[int]) -> FlightResult:
        """Store every fetched item once (one round trip; ``order``: the unique item of each
        answer value); how the flight ends."""
        call = batch.call
        ttl = call.controls.ttl or call.parsed.ttl or self.services.settings.cache_ttl
        model = answer.model or call.model
        stored: dict[int, ItemAnswer] = {}
        for unique, value, tokens in zip(order, answer.values, answer.tokens, strict=True):
            if unique not in stored:
                stored[unique] = ItemAnswer(batch.items.keys[unique], value, model, tokens)
        return STORED if await self.items.put(list(stored.values()), ttl) else RETRY

    async def _merged(self, batch: Batch, answer: BatchAnswer, headers: dict[str, str]) -> web.StreamResponse:
        """Cached and fetched items in input order; ``usage`` is what this request was billed."""
        missing = batch.missing
        await self.saved(batch, dict(zip(missing, answer.tokens, strict=True)))
        fetched = dict(zip(missing, answer.values, strict=True))
        values = [
            fetched[unique] if unique in fetched else batch.entry(unique).json_body()
            for unique in batch.items.positions
        ]
        body = batch.endpoint.merge(
            values, answer.model or batch.call.model, Usage.from_mapping(answer.usage)
        )
        return web.Response(body=body, content_type="application/json", headers=headers)

    def shared_error(self, batch: Batch, status: int, body: bytes) -> web.StreamResponse:
        """The error the flight we joined ended with (every identical request gets it)."""
        batch.request[REQUEST_CACHE] = "coalesced"
        self.services.metrics.record_cache_result(
            batch.call.model, "coalesced", endpoint=batch.call.endpoint.name
        )
        headers = batch.headers("COALESCED")
        return web.Response(status=status, body=body, content_type="application/json", headers=headers)
