"""The flow from the upstream on: forward → store → account → settle.

The answer streams to the client as it comes; a complete one is kept and stored before the client
sees its last byte (a leader's store runs behind its reply, owned by the cache, and ends the
flight for everyone waiting). Spend is settled whatever happened: a cut stream keeps the estimate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from proxy.cache.response import Origin
from proxy.endpoints.fields import prompt_text
from proxy.errors import ProxyError
from proxy.flight.results import RETRY, FlightResult, Leadership
from proxy.obs.metrics import SKIPPED
from proxy.state import REQUEST_CACHE
from proxy.upstream.relay import MissOutcome, forward_miss
from proxy.upstream.session import forward_headers

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from proxy.budget.types import Reservation
    from proxy.cache.entry import CachedEntry
    from proxy.obs.usage import Usage
    from proxy.pipeline.flow import Call
    from proxy.pipeline.services import Services

# Upstream errors every identical request would get too: followers receive a copy instead of
# paying for their own call. Anything else (auth, rate limits, 5xx, timeouts) is retried by one.
SHAREABLE_ERRORS = frozenset({400, 404, 413, 422})


class Misses:
    """Forwards a miss and does everything its answer calls for."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def forward(
        self,
        request: web.Request,
        call: Call,
        result: str,
        *,
        store: bool,
        leadership: Leadership | None = None,
        looked_up: bool = True,
    ) -> tuple[web.StreamResponse, bool]:
        """Forward a miss; returns the response and whether the flight was handed to a background store."""
        services = self.services
        settings = services.settings
        endpoint, parsed = call.endpoint, call.parsed
        reservation = None
        bound: Mapping[str, int] = {}
        if call.managed is not None:  # 429 here, before anything is forwarded
            admitted = await services.budgets.reserve(call.managed, call.model, endpoint.demand(parsed))
            reservation, bound = admitted.reservation, admitted.bound
        request[REQUEST_CACHE] = result
        counted = result if looked_up else SKIPPED
        services.metrics.record_cache_result(call.model, counted, endpoint=call.endpoint.name)
        authorization = request.headers.get("Authorization")
        if call.managed is not None:
            authorization = services.auth.upstream_authorization()
        try:
            writer, outcome = await forward_miss(
                request,
                session=services.session,
                url=f"{settings.upstream_base}{endpoint.upstream_path}",
                # The budget's completion bound, if any: the upstream cannot produce more than was reserved.
                body=endpoint.forward_body(parsed, bound),
                headers=forward_headers(request.headers, authorization),
                extra_headers={"X-Cache": result, "X-Cache-Key": call.digest},
                complete=endpoint.complete,
                fold=endpoint.fold(parsed) if parsed.stream else None,
                keep_limit=settings.cache_max_entry_bytes,
                finish_on_disconnect=settings.finish_on_disconnect,
            )
        except ProxyError:
            if call.managed is not None:  # the upstream never answered: nothing was billed
                await services.budgets.release(call.managed, reservation)
            raise
        usage = endpoint.usage(parsed, outcome.usage, outcome.document)
        await self.settle(call, outcome, usage, reservation)
        handed_off = False
        doc = outcome.document
        # An answer our own bound cut short is the client's, but not what an unbounded request gets.
        if store and doc is not None and not (bound and endpoint.cut_short(doc)):
            raw = outcome.raw if outcome.raw is not None else orjson.dumps(doc)
            ttl = call.controls.ttl or parsed.ttl or settings.cache_ttl
            # The console's gallery shows the model and prompt (only when an index is plugged in).
            origin = (
                Origin(call.model, prompt_text(parsed.body)) if services.cache.index is not None else None
            )
            if leadership is None:
                await services.cache.put(
                    call.key, raw, doc, ttl=ttl, walk=endpoint.blob_slots, usage=usage, origin=origin
                )
            else:
                leadership.answered = True
                services.cache.put_behind(
                    call.key,
                    raw,
                    doc,
                    ttl=ttl,
                    walk=endpoint.blob_slots,
                    usage=usage,
                    then=self._ender(leadership),
                    origin=origin,
                    # On plain Redis the record is written by the flight's end script: one round
                    # trip stores it, drops the lock and tells other replicas.
                    record_writer=services.flights.record_writer(leadership),
                )
                handed_off = True
        elif leadership is not None and (shared := outcome.shared_error(SHAREABLE_ERRORS)) is not None:
            await services.flights.finish(leadership, FlightResult("error", status=shared[0], body=shared[1]))
        if outcome.tail:
            await writer.write(outcome.tail)
        await writer.finish()
        return writer.response, handed_off

    def _ender(self, leadership: Leadership) -> Callable[[CachedEntry | None], Awaitable[None]]:
        """Ends the flight with what the store produced (followers re-try when nothing was stored).

        The flight stays open until the entry is stored, so an identical request arriving meanwhile
        (here or on another replica) waits for it instead of paying again: the leader's client gets
        its last byte without waiting for Redis, and read-your-writes still holds.
        """

        async def end(entry: CachedEntry | None) -> None:
            await self.services.flights.finish(leadership, FlightResult("entry", entry) if entry else RETRY)

        return end

    async def settle(
        self, call: Call, outcome: MissOutcome, usage: Usage, reservation: Reservation | None
    ) -> None:
        """Account an upstream call, settle its reservation, remember a caller the upstream took."""
        services = self.services
        cost = self._account(call, outcome, usage)
        if call.managed is not None:
            # A 200 without usage (cut stream, client gone) keeps the estimate: it may have been billed.
            await services.budgets.settle(
                call.managed,
                reservation,
                model=call.model,
                usage=outcome.usage,
                cost_micro=cost,
                billed_unknown=outcome.status == 200,
            )
        if call.bearer is not None and 200 <= outcome.status < 300:
            await services.verifier.mark(call.bearer, call.secret)

    def _account(self, call: Call, outcome: MissOutcome, usage: Usage) -> int | None:
        """Record the upstream call in metrics; its cost in micro-USD, None without usage."""
        metrics = self.services.metrics
        if 200 <= outcome.status < 300:
            metrics.accept_model(call.model)  # the upstream knows it: it may have its own label
        model_label = metrics.model_label(call.model)
        metrics.upstream_duration.labels(model_label).observe(outcome.upstream_seconds)
        metrics.upstream_ttfb.labels(model_label).observe(outcome.ttfb_seconds)
        if outcome.error_kind:
            metrics.record_upstream_error(outcome.error_kind)
        if outcome.usage is not None or usage.from_answer:
            return self.services.accountant.spent(call.model, call.alias, usage, endpoint=call.endpoint.name)
        return None
