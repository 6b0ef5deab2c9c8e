"""The Endpoint seam: everything that differs between the cached APIs, so the flow is written once.

``proxy.pipeline`` runs parse → authorise → admit → lookup → join or lead the flight → forward →
store → account → settle for every endpoint; an endpoint only answers questions about its own
requests and answers. Chat completions (``endpoints.chat``) is the first implementation.

A request is one cache entry here (N = 1). An API whose request is a batch of independently
cacheable items (embeddings) is a ``BatchEndpoint``: the same hooks describe a whole request (the
flight, the budget's demand, the body sent upstream), and ``split``/``subset``/``read_answer``/
``merge`` let the pipeline's batch flow look every item up, forward only the missing ones as one
request, store each item and answer in the original order (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from proxy.cache.entry import BlobSlot
from proxy.cache.replay import ReplayEvent
from proxy.obs.usage import Demand, Usage
from proxy.upstream.relay import StreamFold


@dataclass(frozen=True, slots=True)
class Parsed:
    """One request body as its endpoint understood it."""

    raw: bytes  # as received: forwarded unchanged unless the endpoint adds fields
    body: Mapping[str, Any]  # the request object (a multipart form: its fields)
    model: str
    stream: bool = False
    usage_asked: bool = False  # a streaming client that asked for the usage chunk
    # False: the answer depends on state the upstream keeps (Responses API ``conversation``,
    # ``background``): never served from nor stored in the cache, whatever the headers say.
    cacheable: bool = True
    ttl: int | None = None  # this endpoint's own entry lifetime (a model list: short); None: PROXY_CACHE_TTL


class Endpoint(Protocol):
    """One cached API. Every method is pure (no I/O) and cheap except where it says otherwise."""

    name: str  # for logs and docs: "chat.completions"
    method: str  # "POST"
    route: str  # the proxy's route, also the metrics label: "/v1/chat/completions"
    upstream_path: str  # below the upstream base URL: "/chat/completions"
    key_scope: str  # mixed into the cache key so two APIs never share an entry ("" for chat: v1 keys)

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        """Validate the body (JSON, or multipart for uploads); a ``ProxyError`` 400 saying what is wrong.

        ``content_type`` is the whole ``Content-Type`` header, parameters included (a multipart
        boundary); "" when the request has none.
        """
        ...

    def key_fields(self, parsed: Parsed) -> Mapping[str, Any]:
        """What the cache key covers: every field that can change the answer (files by digest)."""
        ...

    def demand(self, parsed: Parsed) -> Demand:
        """The most this request may cost, read from the request (the budget reserves for it)."""
        ...

    def forward_body(self, parsed: Parsed, bound: Mapping[str, int]) -> bytes:
        """The body sent upstream: ``bound`` (the budget's completion limit) set, plus whatever the
        proxy needs for itself (chat: ``stream_options.include_usage``)."""
        ...

    def complete(self, doc: Any) -> bool:
        """A 200 answer complete enough to store (chat: every choice has a ``finish_reason``)."""
        ...

    def cut_short(self, doc: Mapping[str, Any]) -> bool:
        """The answer stopped at a completion limit: served, but not stored when the proxy's own
        bound cut it (an unbounded request would have got more)."""
        ...

    def fold(self, parsed: Parsed) -> StreamFold:
        """A reader for a streamed answer: what to pass on, when it ended, the assembled document."""
        ...

    def blob_slots(self, doc: Mapping[str, Any]) -> list[BlobSlot]:
        """Where base64 payloads may sit, in document order (the cache stores them as blobs)."""
        ...

    def replay(self, doc: Mapping[str, Any], usage_asked: bool) -> Iterable[ReplayEvent]:
        """A stored answer as the events a streaming client expects, ending as a live stream does."""
        ...

    def usage(self, parsed: Parsed, usage: Mapping[str, Any] | None, doc: Mapping[str, Any] | None) -> Usage:
        """What the answer consumed (``usage`` is the upstream's report, ``doc`` the answer if any),
        in the units a price counts."""
        ...


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """A batch request's answer, per item: what to store and what to splice into the merged answer."""

    model: str  # the model the upstream says answered
    values: tuple[bytes, ...]  # each item's answer exactly as the upstream wrote it, in request order
    tokens: tuple[int, ...]  # each item's share of ``usage`` (exact for one item, else an estimate)
    usage: Mapping[str, Any] | None  # the upstream's ``usage`` object, as billed


@runtime_checkable
class BatchEndpoint(Endpoint, Protocol):
    """An API whose request is a batch of independently cached items (``POST /v1/embeddings``).

    The ``Endpoint`` hooks see whole requests: the client's, or the sub-request ``subset`` builds
    for the items the cache lacks (its ``demand`` is what a budget reserves, its ``forward_body``
    what goes upstream). Every method is pure.
    """

    def split(self, parsed: Parsed) -> list[Any]:
        """The request's items in input order, duplicates included (JSON values, as sent upstream)."""
        ...

    def item_key_fields(self, parsed: Parsed, item: Any) -> Mapping[str, Any]:
        """What one item's cache key covers: the item and every field that can change its answer."""
        ...

    def subset(self, parsed: Parsed, items: Sequence[Any]) -> Parsed:
        """The same request for ``items`` only (the ones to fetch), every other field unchanged."""
        ...

    def answer_bound(self, sub: Parsed) -> int:
        """The most bytes the answer to ``sub`` can take (a partly cached batch whose missing items
        could answer with more than the proxy holds is forwarded whole, as sent)."""
        ...

    def read_answer(self, sub: Parsed, raw: bytes) -> BatchAnswer:
        """Each item's answer in a 200 body for ``sub``, in ``split(sub)`` order (``ValueError``:
        not an answer the proxy can take apart)."""
        ...

    def merge(self, values: Sequence[bytes], model: str, usage: Usage) -> bytes:
        """The answer to the client: one item answer per input position, in order; ``usage`` is
        what this request cost upstream."""
        ...
