"""Entries of a batch's items (embeddings): many small entries found and stored one round trip at a time.

An item entry is an ordinary ``LCP2`` entry under ``{p}:r1:{namespace}:{digest}`` (so purges, the
hot tier and ``max-age`` treat it like any other): its template is the item's answer exactly as
the upstream wrote it (an embedding's JSON array or base64 string), its header the model that
answered and the item's tokens. It has no blobs: a base64 embedding is a few KB, and a blob
would cost every batch lookup a second round trip for 25% less memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.cache.entry import CachedEntry, EntryMeta, encode_entry
from proxy.cache.response import ResponseCache
from proxy.storage.base import StoreUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ItemAnswer:
    """One item to store: its entry key, its answer bytes, the model that answered, its tokens."""

    key: str
    value: bytes
    model: str
    tokens: int


class ItemCache:
    """Finds and stores the entries of a batch's items through the response cache's store."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache

    async def find(self, keys: Sequence[str], max_age: int | None) -> list[CachedEntry | None]:
        """The entry of each key (None: missing, expired or too old): hot ones without I/O, the rest
        in one MGET (raises StoreUnavailable)."""
        found: list[CachedEntry | None] = [self.cache.fresh(key, max_age) for key in keys]
        cold = [index for index, entry in enumerate(found) if entry is None]
        if not cold:
            return found
        records = await self.cache.store.mget([keys[index] for index in cold])
        for index, record in zip(cold, records, strict=True):
            found[index] = await self.cache.open(keys[index], record, max_age)
        return found

    async def put(self, items: Sequence[ItemAnswer], ttl: int) -> bool:
        """Store every item in one round trip; False when the store failed (counted and logged, never
        raised: the client gets its answer either way)."""
        created = self.cache.clock()
        records = []
        for item in items:
            meta = EntryMeta(created, item.model, item.tokens, 0, 0, (), expires=created + ttl)
            records.append((item.key, encode_entry(meta, item.value)))
        try:
            await self.cache.store.set_many(records, ttl)
        except StoreUnavailable as exc:
            log.warning("cache store of %d item(s) failed: %s", len(records), exc)
            self.cache.on_store_error("set")
            return False
        return True
