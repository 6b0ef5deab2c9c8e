"""``POST /v1/chat/completions``: cache lookup, single flight, forwarding, storing, accounting."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from proxy.budget.guard import Admitted
from proxy.budget.plan import count_images
from proxy.cache.controls import CacheControls
from proxy.cache.entry import image_urls, split_response
from proxy.cache.keys import cache_hash
from proxy.cache.response import CachedEntry, meta_for
from proxy.endpoints.chat import parse_chat_body, wants_stream, wants_usage
from proxy.errors import ProxyError
from proxy.flight.flights import RETRY, FlightResult, Leadership, LockTicket
from proxy.keys.auth import managed_namespace
from proxy.keys.store import ManagedKey
from proxy.keys.verify import UpstreamRefusal
from proxy.obs.accounting import Usage
from proxy.state import (
    ACCOUNTANT,
    AUTH,
    BUDGETS,
    CACHE,
    FLIGHTS,
    METRICS,
    REQUEST_CACHE,
    REQUEST_MODEL,
    SESSION,
    SETTINGS,
    VERIFIER,
)
from proxy.storage.base import StoreError
from proxy.upstream.relay import MissOutcome, forward_miss
from proxy.upstream.session import forward_headers
from proxy.upstream.sse import sse
from proxy.web.handlers import bearer_of, cache_namespace, key_alias, read_body, serve_entry

log = logging.getLogger(__name__)

# Upstream errors every identical request would get too: followers receive a copy instead of
# paying for their own call. Anything else (auth, rate limits, 5xx, timeouts) is retried by one.
SHAREABLE_ERRORS = frozenset({400, 404, 413, 422})


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Everything decided about one chat request before the cache is consulted."""

    raw: bytes
    body: dict[str, Any]
    model: str
    stream: bool
    usage_asked: bool
    bearer: str | None
    alias: str | None
    controls: CacheControls
    namespace: str | None
    digest: str
    key: str
    managed: ManagedKey | None = None  # a proxy-issued key: budget enforced, upstream key used


async def _parse(request: web.Request) -> ChatRequest:
    app = request.app
    settings = app[SETTINGS]
    bearer = bearer_of(request)
    managed = await app[AUTH].resolve(bearer)  # 401 before reading a body we will not use
    raw = await read_body(request, settings.max_body_bytes)
    body = parse_chat_body(raw)
    controls = CacheControls.from_headers(request.headers)
    if managed is not None:
        await app[BUDGETS].admit(managed, body["model"])
        # Never verified upstream nor forwarded: the proxy presents its own key for managed keys.
        bearer = None
        namespace: str | None = managed_namespace(managed, settings.cache_scope, controls.namespace)
    else:
        namespace = cache_namespace(settings, bearer, controls.namespace)
    digest = cache_hash(body, namespace or "")
    request[REQUEST_MODEL] = body["model"]
    return ChatRequest(
        raw=raw,
        body=body,
        model=body["model"],
        stream=wants_stream(body),
        usage_asked=wants_usage(body),
        bearer=bearer,
        alias=managed.alias if managed is not None else key_alias(bearer),
        controls=controls,
        namespace=namespace,
        digest=digest,
        key=app[CACHE].entry_key(namespace or "", digest),
        managed=managed,
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Serve from cache, join an identical in-flight request, or forward, stream back and store."""
    app = request.app
    chat = await _parse(request)
    cacheable = chat.namespace is not None
    can_store = cacheable and chat.controls.store
    result = "MISS"
    # A request that will join the flight on a miss reads the cache and takes the lock in one go.
    ticket = LockTicket()
    if not cacheable or not chat.controls.lookup:
        result = "BYPASS"
    else:
        fetch = app[FLIGHTS].fetcher(chat.digest, ticket) if can_store else None
        try:
            entry = await app[CACHE].lookup(chat.key, chat.controls.max_age, fetch)
        except StoreError as exc:
            log.warning("cache lookup failed, bypassing: %s", exc)
            app[METRICS].store_errors.labels("get").inc()
            entry, result, can_store = None, "BYPASS", False
        if entry is not None:
            return await _serve_cached(request, chat, entry, "HIT")
    if result == "MISS" and can_store:
        joined = await app[FLIGHTS].join(chat.digest, chat.key, lambda: _quiet_lookup(request, chat), ticket)
        if not isinstance(joined, FlightResult):
            return await _lead(request, chat, joined)
        # A late joiner gets an answer that existed before it asked, i.e. a stored entry: it must
        # satisfy the client's max-age like any other; if not, this request refreshes it itself.
        late = joined.entry if joined.late else None
        if late is None or late.young_enough(chat.controls.max_age, time.time()):
            return await _serve_flight_result(request, chat, joined)
    response, _ = await _forward(request, chat, result, can_store=can_store)
    return response


async def _quiet_lookup(request: web.Request, chat: ChatRequest) -> CachedEntry | None:
    try:
        return await request.app[CACHE].lookup(chat.key, chat.controls.max_age)
    except StoreError:
        return None


async def _serve_cached(
    request: web.Request, chat: ChatRequest, entry: CachedEntry, result: str
) -> web.StreamResponse:
    """A cached answer, only for a caller the upstream accepts; accounted as savings."""
    app = request.app
    if chat.bearer is not None:
        try:
            await app[VERIFIER].ensure(chat.bearer)
        except UpstreamRefusal as refusal:
            request[REQUEST_CACHE] = "none"
            return web.Response(status=refusal.status, body=refusal.body, content_type="application/json")
    meta = entry.meta
    usage = Usage(meta.prompt_tokens, meta.completion_tokens, meta.images)
    saved = app[ACCOUNTANT].saved(chat.model, chat.alias, usage)
    if chat.managed is not None:
        await app[BUDGETS].on_hit(chat.managed, chat.model, usage, saved)
    return await serve_entry(
        request, entry, stream=chat.stream, usage_asked=chat.usage_asked, digest=chat.digest, result=result
    )


async def _serve_flight_result(
    request: web.Request, chat: ChatRequest, flight: FlightResult
) -> web.StreamResponse:
    if flight.entry is not None:
        return await _serve_cached(request, chat, flight.entry, "HIT" if flight.late else "COALESCED")
    request[REQUEST_CACHE] = "coalesced"
    request.app[METRICS].record_cache_result(chat.model, "coalesced")
    return web.Response(
        status=flight.status,
        body=flight.body,
        content_type="application/json",
        headers={"X-Cache": "COALESCED", "X-Cache-Key": chat.digest},
    )


async def _lead(request: web.Request, chat: ChatRequest, leadership: Leadership) -> web.StreamResponse:
    """The one request of a flight that goes upstream; followers get what it produced."""
    outcome: FlightResult = RETRY
    handed_off = False
    try:
        # The previous flight may have stored the answer between our lookup and our leadership
        # (unless taking the Redis lock already showed there is no entry).
        entry = None if leadership.entry_absent else await _quiet_lookup(request, chat)
        if entry is not None:
            outcome = FlightResult("entry", entry)
            return await _serve_cached(request, chat, entry, "HIT")
        response, handed_off = await _forward(request, chat, "MISS", can_store=True, leadership=leadership)
        return response
    finally:
        if not handed_off:
            await request.app[FLIGHTS].finish(leadership, outcome)


async def _store_and_share(
    request: web.Request, chat: ChatRequest, outcome: MissOutcome, leadership: Leadership
) -> None:
    """Store the answer, then end the flight with it (in the background of the leader's reply).

    The flight stays open until the entry is stored, so an identical request arriving meanwhile
    (here or on another replica) waits for it instead of paying again: the leader's client gets
    its last byte without waiting for Redis, and read-your-writes still holds.
    """
    entry = None
    try:
        entry = await _store(request, chat, outcome)
    finally:
        result = FlightResult("entry", entry) if entry is not None else RETRY
        await request.app[FLIGHTS].finish(leadership, result)


async def _forward(
    request: web.Request,
    chat: ChatRequest,
    result: str,
    *,
    can_store: bool,
    leadership: Leadership | None = None,
) -> tuple[web.StreamResponse, bool]:
    """Forward a miss; returns the response and whether the flight was handed to a background store."""
    app = request.app
    settings = app[SETTINGS]
    admitted = Admitted()
    if chat.managed is not None:  # 429 here, before anything is forwarded
        admitted = await app[BUDGETS].reserve(chat.managed, chat.model, chat.raw, chat.body)
    reservation = admitted.reservation
    request[REQUEST_CACHE] = result
    app[METRICS].record_cache_result(chat.model, result)
    # The budget's completion bound, if any: the upstream cannot produce more than was reserved.
    changes: dict[str, object] = dict(admitted.bound)
    if chat.stream and not chat.usage_asked:
        # Usage is how we account a stream; the client still sees exactly what it asked for.
        changes["stream_options"] = {**(chat.body.get("stream_options") or {}), "include_usage": True}
    upstream_body = orjson.dumps({**chat.body, **changes}) if changes else chat.raw
    authorization = request.headers.get("Authorization")
    if chat.managed is not None:
        authorization = app[AUTH].upstream_authorization()
    try:
        writer, outcome = await forward_miss(
            request,
            session=app[SESSION],
            url=f"{settings.upstream_base}/chat/completions",
            body=upstream_body,
            headers=forward_headers(request.headers, authorization),
            extra_headers={"X-Cache": result, "X-Cache-Key": chat.digest},
            stream=chat.stream,
            client_wants_usage=chat.usage_asked,
            keep_limit=settings.cache_max_entry_bytes,
            finish_on_disconnect=settings.finish_on_disconnect,
        )
    except ProxyError:
        if chat.managed is not None:  # the upstream never answered: nothing was billed
            await app[BUDGETS].release(chat.managed, reservation)
        raise
    cost = _account(request, chat, outcome)
    if chat.managed is not None:
        # A 200 without usage (cut stream, client gone) keeps the estimate: it may have been billed.
        await app[BUDGETS].settle(
            chat.managed,
            reservation,
            model=chat.model,
            usage=outcome.usage,
            cost_micro=cost,
            billed_unknown=outcome.status == 200,
        )
    if chat.bearer is not None and 200 <= outcome.status < 300:
        await app[VERIFIER].mark(chat.bearer)
    handed_off = False
    # An answer our own bound cut short is the client's, but not what an unbounded request gets.
    if can_store and outcome.document is not None and not (admitted.bound and _cut_short(outcome.document)):
        if leadership is None:
            await _store(request, chat, outcome)
        else:
            leadership.answered = True
            app[FLIGHTS].background(_store_and_share(request, chat, outcome, leadership))
            handed_off = True
    elif leadership is not None and (shared := outcome.shared_error(SHAREABLE_ERRORS)) is not None:
        await app[FLIGHTS].finish(leadership, FlightResult("error", status=shared[0], body=shared[1]))
    if outcome.stream_complete:
        await writer.write(sse(b"[DONE]"))
    await writer.finish()
    return writer.response, handed_off


def _cut_short(document: dict[str, Any]) -> bool:
    """Some choice stopped at the token limit (OpenAI ``finish_reason: "length"``)."""
    return any(
        isinstance(c, dict) and c.get("finish_reason") == "length" for c in document.get("choices") or ()
    )


def _account(request: web.Request, chat: ChatRequest, outcome: MissOutcome) -> int | None:
    """Record the upstream call in metrics; its cost in micro-USD, None without usage."""
    metrics = request.app[METRICS]
    if 200 <= outcome.status < 300:
        metrics.accept_model(chat.model)  # the upstream knows it: it may have its own label
    model_label = metrics.model_label(chat.model)
    metrics.upstream_duration.labels(model_label).observe(outcome.upstream_seconds)
    metrics.upstream_ttfb.labels(model_label).observe(outcome.ttfb_seconds)
    if outcome.error_kind:
        metrics.record_upstream_error(outcome.error_kind)
    if outcome.usage is not None:
        images = len(image_urls(outcome.document)) if outcome.document is not None else 0
        input_images, _ = count_images(chat.body.get("messages"))
        return request.app[ACCOUNTANT].spent(
            chat.model, chat.alias, Usage.from_mapping(outcome.usage, images, input_images)
        )
    return None


async def _store(request: web.Request, chat: ChatRequest, outcome: MissOutcome) -> CachedEntry | None:
    """Store a complete response; a store failure is counted, never shown to the client."""
    app = request.app
    settings = app[SETTINGS]
    doc = outcome.document
    assert doc is not None
    raw = outcome.raw if outcome.raw is not None else orjson.dumps(doc)
    if len(raw) > settings.cache_max_entry_bytes:
        return None
    split = split_response(raw, doc)
    meta = meta_for(doc, split, time.time())
    try:
        return await app[CACHE].put(chat.key, split, meta, chat.controls.ttl or settings.cache_ttl)
    except StoreError as exc:
        log.warning("cache store failed: %s", exc)
        app[METRICS].store_errors.labels("set").inc()
        return None
