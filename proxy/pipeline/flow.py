"""The flow, up to the upstream: identify the request, look it up, join or lead its flight, serve.

A hot image hit runs in this module, the endpoint's ``parse``, the cache's ``fresh`` and the
caller checks, nothing else: no store, flight, upstream or budget code (``tests/test_hit_path.py``
traces it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from proxy.cache.controls import CacheControls
from proxy.cache.keys import managed_namespace, passthrough_namespace
from proxy.cache.ready import ReadyResponse
from proxy.endpoints.base import BatchEndpoint
from proxy.errors import endpoint_not_allowed, too_large
from proxy.flight.results import RETRY, FlightResult, Leadership
from proxy.keys.auth import bearer_of, key_alias
from proxy.keys.routes import allowed_for
from proxy.keys.settings import hash_secret
from proxy.obs.usage import Usage
from proxy.pipeline.batch import Batches
from proxy.pipeline.memo import RequestMemo
from proxy.pipeline.miss import Misses
from proxy.state import PAID_ENDPOINTS, PIPELINE, REQUEST_CACHE, REQUEST_ENDPOINT, REQUEST_MODEL
from proxy.storage.base import StoreUnavailable
from proxy.upstream.relay import ClientWriter
from proxy.util.memo import remember

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

    from proxy.cache.entry import CachedEntry, EntryMeta
    from proxy.endpoints.base import Endpoint, Parsed
    from proxy.keys.settings import ManagedKey
    from proxy.pipeline.services import Services

log = logging.getLogger(__name__)

# Bearers whose digest is remembered (each entry ~200 bytes; a client controls the bearer).
_MAX_SECRETS = 4096
_MAX_REMEMBERED_BEARER = 256
# Usage per token counts of the entries served lately.
_MAX_USAGES = 4096
# Calls remembered, each keyed by its body and the headers it derives from (at most ~10 MiB).
_MAX_CALLS = 4096
_CALL_KEY_BYTES = 2560
# A JSON hit's header lines (``cache.ready``): X-Cache, Age, X-Cache-Key.
_HIT_LINES = b"X-Cache: %s\r\nAge: %d\r\nX-Cache-Key: %s\r\nContent-Type: application/json\r\n"


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (1.5 us for Call's
# nine, 0.3 us plain); one is built per request and nothing changes it after ``identify``.
@dataclass(slots=True)
class Call:
    """Everything decided about one request before the cache is consulted (never changed after)."""

    endpoint: Endpoint
    parsed: Parsed
    bearer: str | None  # a pass-through caller's own key: verified before any cached answer
    managed: ManagedKey | None  # a proxy-issued key: budget enforced, the proxy's key used upstream
    alias: str | None  # the caller's label in metrics, never a secret
    # hash_secret(bearer), computed once: the namespace, the alias and the verified-caller record
    # all derive from it (three sha256 per request were 4 % of a text hit).
    secret: str | None
    controls: CacheControls
    namespace: str | None  # None: this request is neither served from nor stored in the cache
    digest: str
    key: str

    @property
    def model(self) -> str:
        """The model the client asked for."""
        return self.parsed.model


@dataclass(slots=True)
class Hit:
    """The lookup found an entry to serve."""

    entry: CachedEntry


@dataclass(frozen=True, slots=True)
class Follow:
    """An identical request is in flight: its outcome is ours."""

    result: FlightResult


@dataclass(frozen=True, slots=True)
class Lead:
    """This request goes upstream for everyone waiting on the same key; it must end the flight."""

    leadership: Leadership


@dataclass(frozen=True, slots=True)
class Miss:
    """Go upstream alone: ``result`` is MISS or BYPASS, ``store`` whether the answer may be kept,
    ``looked_up`` False when the cache was skipped on purpose (not cacheable, or the client's
    ``no-cache``): counted as ``skipped``, so ``bypass`` means only a store that failed."""

    result: str
    store: bool
    looked_up: bool = True


def route(endpoint: Endpoint) -> Handler:
    """The aiohttp handler of ``endpoint``: the app's pipeline, serving that endpoint (a batch of
    items through the batch flow)."""
    if isinstance(endpoint, BatchEndpoint):
        batch = endpoint

        async def handle_batch(request: web.Request) -> web.StreamResponse:
            request[REQUEST_ENDPOINT] = batch.name
            return await request.app[PIPELINE].serve_batch(request, batch)

        return handle_batch

    async def handle(request: web.Request) -> web.StreamResponse:
        request[REQUEST_ENDPOINT] = endpoint.name
        return await request.app[PIPELINE].serve(request, endpoint)

    return handle


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing oversize bodies with 413 before (or while) reading them."""
    content = request.content
    if content.is_eof() and content.exception() is None and content.total_bytes <= limit:
        # The whole body is already buffered (a small request arrives with its head): take it in
        # one call. ``read()`` loops over ``readany()`` and copies through a bytearray: 4 % of a
        # text hit. Nothing else reads this stream, so the buffer is the whole body (the parser
        # ends the stream after exactly Content-Length bytes, so that header is within the limit
        # too: it is not parsed again here, 1 % of a text hit).
        return content.read_nowait()
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None


class Pipeline:
    """The flow for every endpoint; built once by the app factory from the app's services."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.misses = Misses(services)
        self.batches = Batches(services, self.misses)
        self.memo = RequestMemo()
        # hash_secret per bearer seen lately (bounded): a client sends the same key all day, and a
        # sha256 per request was 3 % of a text hit. The secrets are in memory anyway (headers).
        self._secrets: dict[str, str] = {}
        self._usages: dict[tuple[int, int, int, int, str | None], Usage] = {}
        # The Call of a pass-through request seen lately, by everything it derives from (bounded:
        # keys up to _CALL_KEY_BYTES). A repeated text hit then skips parsing, cache controls,
        # namespace, digest and key building: ~6 % of its CPU.
        self._calls: dict[tuple[object, ...], Call] = {}

    def _usage_of(self, meta: EntryMeta) -> Usage:
        """The entry's ``Usage``, shared by every hit with the same counts: a frozen dataclass of
        seven fields costs ~1.5 us to build (2 % of a text hit), a tuple and a dict lookup less."""
        counts = (
            meta.prompt_tokens,
            meta.completion_tokens,
            meta.images,
            meta.image_prompt_tokens,
            meta.image_model,
        )
        usage = self._usages.get(counts)
        if usage is None:
            usage = Usage(
                meta.prompt_tokens,
                meta.completion_tokens,
                meta.images,
                image_prompt_tokens=meta.image_prompt_tokens,
                image_model=meta.image_model,
            )
            remember(self._usages, counts, usage, _MAX_USAGES)
        return usage

    def _secret_of(self, bearer: str) -> str:
        secret = self._secrets.get(bearer)
        if secret is None:
            secret = hash_secret(bearer)
            if len(bearer) > _MAX_REMEMBERED_BEARER:
                return secret  # a header may be 8 KiB: only key-sized bearers are remembered
            remember(self._secrets, bearer, secret, _MAX_SECRETS)
        return secret

    async def serve(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        """Serve from cache, join an identical request in flight, or go upstream (and store)."""
        call = await self.identify(request, endpoint)
        step = await self.lookup(call)
        if isinstance(step, Hit):
            return await self.serve_hit(request, call, step.entry, "HIT")
        if isinstance(step, Follow):
            return await self.serve_flight(request, call, step.result)
        if isinstance(step, Lead):
            return await self.lead(request, call, step.leadership)
        response, _ = await self.misses.forward(
            request, call, step.result, store=step.store, looked_up=step.looked_up
        )
        return response

    async def serve_batch(self, request: web.Request, endpoint: BatchEndpoint) -> web.StreamResponse:
        """A request of independently cached items (``pipeline.batch``): identified once, like any."""
        return await self.batches.serve(request, await self.identify(request, endpoint), endpoint)

    async def identify(self, request: web.Request, endpoint: Endpoint) -> Call:
        """Authorise (401 before reading a body we will not use), parse (413, 400), admit a managed
        key (403, 429, 503) and derive the cache key from the caller's namespace."""
        services = self.services
        scope = services.settings.cache_scope
        bearer = bearer_of(request.headers)
        managed = await services.auth.resolve(bearer)
        if managed is not None and not managed.allows_endpoint(endpoint.name):
            # Before the body is read: nothing parsed, reserved or forwarded for a refused call.
            allowed = allowed_for(managed, request.app[PAID_ENDPOINTS])
            raise endpoint_not_allowed(f"{endpoint.name} ({endpoint.method} {endpoint.route})", allowed)
        raw = await read_body(request, services.settings.max_body_bytes)
        headers = request.headers
        # The whole header: a multipart body's boundary is one of its parameters (RFC 7578 §4.1).
        content_type = headers.get(hdrs.CONTENT_TYPE, "")
        remembered: tuple[object, ...] | None = None
        if managed is None:
            # A pass-through caller repeating a request: everything below is a function of these
            # (a managed key was admitted above, on every request, and is never remembered here).
            cache_control = headers.get("Cache-Control")
            ttl, requested = headers.get("X-Cache-TTL"), headers.get("X-Cache-Namespace")
            # Bounded by what the key holds, not only the body: a client controls every header
            # (each up to 8 KiB), and 4,096 keys of 30 KiB would be 120 MiB.
            size = len(raw) + len(content_type) + len(bearer or "")
            size += len(cache_control or "") + len(ttl or "") + len(requested or "")
            if size <= _CALL_KEY_BYTES:
                remembered = (endpoint.name, content_type, bearer, cache_control, ttl, requested, raw)
                known = self._calls.get(remembered)
                if known is not None:
                    request[REQUEST_MODEL] = known.parsed.model
                    return known
        parsed, request_digest = self.memo.identify(endpoint, raw, content_type)
        controls = CacheControls.from_headers(headers)
        secret: str | None = None
        if managed is not None:
            await services.budgets.admit(managed, parsed.model)
            # Never verified upstream nor forwarded: the proxy presents its own key for managed keys.
            bearer = None
            namespace: str | None = managed_namespace(managed, scope, controls.namespace)
        else:
            secret = None if bearer is None else self._secret_of(bearer)
            namespace = passthrough_namespace(scope, bearer, controls.namespace, secret)
        digest = self.memo.entry_digest(request_digest, namespace or "", endpoint.key_scope)
        request[REQUEST_MODEL] = parsed.model
        call = Call(
            endpoint=endpoint,
            parsed=parsed,
            bearer=bearer,
            managed=managed,
            alias=managed.alias if managed is not None else key_alias(bearer, secret),
            secret=secret,
            controls=controls,
            namespace=namespace,
            digest=digest,
            key=services.cache.entry_key(namespace or "", digest),
        )
        if remembered is not None:
            remember(self._calls, remembered, call, _MAX_CALLS)
        return call

    async def lookup(self, call: Call) -> Hit | Follow | Lead | Miss:
        """Look the key up (``find``), then on a miss join or lead its flight (``join``)."""
        cacheable = call.namespace is not None and call.parsed.cacheable
        can_store = cacheable and call.controls.store
        if not cacheable or not call.controls.lookup:
            return Miss("BYPASS", store=can_store, looked_up=False)
        try:
            entry, token = await self.find(call, lead_on_miss=can_store)
        except StoreUnavailable as exc:
            log.warning("cache lookup failed, bypassing: %s", exc)
            self.services.metrics.store_errors.labels("get").inc()
            return Miss("BYPASS", store=False)
        if entry is not None:
            return Hit(entry)
        if not can_store:
            return Miss("MISS", store=False)
        return await self.join(call, token)

    async def find(self, call: Call, *, lead_on_miss: bool) -> tuple[CachedEntry | None, str | None]:
        """The entry, from the hot tier (no I/O) or the store; on a miss that will lead, also the
        flight lock (raises StoreUnavailable).

        Still one Redis round trip on plain Redis: the flight's ``claim`` reads the entry record
        and, when there is none, takes the lock in the same script; the cache then opens the record
        it read. The lock token goes to ``join``; a hit never takes it.
        """
        cache, flights = self.services.cache, self.services.flights
        max_age = call.controls.max_age
        entry = cache.fresh(call.key, max_age)
        if entry is not None:
            return entry, None
        if lead_on_miss and flights.claims:
            claim = await flights.claim(call.digest, call.key)
            return await cache.open(call.key, claim.record, max_age), claim.token
        return await cache.lookup(call.key, max_age), None

    async def join(self, call: Call, token: str | None) -> Follow | Lead | Miss:
        """Lead the flight of this key, or follow the one in progress (here or on another replica)."""
        joined = await self.services.flights.join(
            call.digest, call.key, lambda: self._quiet_lookup(call), token
        )
        if isinstance(joined, Leadership):
            return Lead(joined)
        # A late joiner gets an answer that existed before it asked, i.e. a stored entry: it must
        # satisfy the client's max-age like any other; if not, this request refreshes it itself.
        late = joined.entry if joined.late else None
        if late is None or late.young_enough(call.controls.max_age, time.time()):
            return Follow(joined)
        return Miss("MISS", store=True)

    async def _quiet_lookup(self, call: Call) -> CachedEntry | None:
        try:
            return await self.services.cache.lookup(call.key, call.controls.max_age)
        except StoreUnavailable:
            return None

    async def serve_hit(
        self, request: web.Request, call: Call, entry: CachedEntry, result: str
    ) -> web.StreamResponse:
        """A cached answer, only for a caller the upstream accepts; accounted as savings."""
        services = self.services
        bearer = call.bearer
        if (
            bearer is not None
            and not services.verifier.known(bearer, call.secret)  # the usual case: no coroutine
            and (refusal := await services.refusal(bearer, call.secret)) is not None
        ):
            request[REQUEST_CACHE] = "none"
            return refusal
        usage = self._usage_of(entry.meta)
        saved = services.accountant.saved(call.model, call.alias, usage, endpoint=call.endpoint.name)
        if call.managed is not None:
            await services.budgets.on_hit(call.managed, call.model, usage, saved)
        request[REQUEST_CACHE] = result
        services.cache.served(entry)
        services.metrics.accept_model(call.model)  # only an upstream 2xx is ever stored
        services.metrics.record_cache_result(call.model, result, endpoint=call.endpoint.name)
        age = entry.age(time.time())
        if not call.parsed.stream:
            # The head by hand (``cache.ready``): every value in it is the proxy's own (a constant,
            # digits, a hex digest), so it needs no checking; aiohttp's field order.
            lines = _HIT_LINES % (result.encode(), age, call.digest.encode())
            return ReadyResponse(lines, entry.json_body())
        headers = {"X-Cache": result, "Age": str(age), "X-Cache-Key": call.digest}
        endpoint, usage_asked = call.endpoint, call.parsed.usage_asked
        # Checked before the status line goes out: a corrupt entry raises here, nothing sent yet.
        parts = entry.sse_parts(endpoint.blob_slots, lambda doc: endpoint.replay(doc, usage_asked))
        response = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        # A client that goes away mid-replay is normal (it has what it needed): stop quietly.
        writer = ClientWriter(response)
        await writer.prepare(request)
        for part in parts:
            await writer.write(part)
            if writer.gone:
                break
        await writer.finish()
        return response

    async def serve_flight(
        self, request: web.Request, call: Call, result: FlightResult
    ) -> web.StreamResponse:
        """What the flight we joined ended with: its entry, or the error every identical request gets."""
        if result.entry is not None:
            return await self.serve_hit(request, call, result.entry, "HIT" if result.late else "COALESCED")
        request[REQUEST_CACHE] = "coalesced"
        self.services.metrics.record_cache_result(call.model, "coalesced", endpoint=call.endpoint.name)
        return web.Response(
            status=result.status,
            body=result.body,
            content_type="application/json",
            headers={"X-Cache": "COALESCED", "X-Cache-Key": call.digest},
        )

    async def lead(self, request: web.Request, call: Call, leadership: Leadership) -> web.StreamResponse:
        """The one request of a flight that goes upstream; followers get what it produced."""
        outcome: FlightResult = RETRY
        handed_off = False
        try:
            # The previous flight may have stored the answer between our lookup and our leadership
            # (unless taking the Redis lock already showed there is no entry).
            entry = None if leadership.entry_absent else await self._quiet_lookup(call)
            if entry is not None:
                outcome = FlightResult("entry", entry)
                return await self.serve_hit(request, call, entry, "HIT")
            response, handed_off = await self.misses.forward(
                request, call, "MISS", store=True, leadership=leadership
            )
            return response
        finally:
            if not handed_off:
                await self.services.flights.finish(leadership, outcome)
