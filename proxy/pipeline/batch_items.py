"""One batch request in the flow: its unique items, their entry keys, what the cache has of them.

A repeated item is one item: looked up, fetched and stored once, answered at every position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.cache.keys import cache_hash

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.cache.entry import CachedEntry
    from proxy.endpoints.base import BatchEndpoint
    from proxy.pipeline.flow import Call


@dataclass(frozen=True, slots=True)
class Items:
    """A batch's unique items, their entry keys and digests, and which unique item each input
    position holds."""

    values: tuple[Any, ...]
    keys: tuple[str, ...]
    digests: tuple[str, ...]
    positions: tuple[int, ...]

    @classmethod
    def of(cls, call: Call, endpoint: BatchEndpoint, entry_key: Callable[[str, str], str]) -> Items:
        """Key every item of the request under the caller's namespace and the endpoint's scope."""
        namespace = call.namespace or ""
        values: list[Any] = []
        digests: list[str] = []
        seen: dict[str, int] = {}
        positions: list[int] = []
        for item in endpoint.split(call.parsed):
            digest = cache_hash(endpoint.item_key_fields(call.parsed, item), namespace, endpoint.key_scope)
            if digest not in seen:
                seen[digest] = len(values)
                values.append(item)
                digests.append(digest)
            positions.append(seen[digest])
        keys = tuple(entry_key(namespace, digest) for digest in digests)
        return cls(tuple(values), keys, tuple(digests), tuple(positions))


@dataclass(slots=True)
class Batch:
    """A batch request being served: the call, its items and the entry found for each (or None)."""

    request: web.Request
    call: Call
    endpoint: BatchEndpoint
    items: Items
    found: list[CachedEntry | None]

    @property
    def missing(self) -> list[int]:
        """The unique items the cache does not have, in input order."""
        return [unique for unique, entry in enumerate(self.found) if entry is None]

    @property
    def cached(self) -> bool:
        """Every item was found."""
        return all(entry is not None for entry in self.found)

    def entry(self, unique: int) -> CachedEntry:
        """The entry found for a unique item (the caller knows there is one)."""
        entry = self.found[unique]
        assert entry is not None
        return entry

    def headers(self, result: str) -> dict[str, str]:
        """``X-Cache``, ``X-Cache-Items: <positions served from the cache>/<positions>`` and, for a
        request of one item, ``X-Cache-Key`` (that item's entry, as a purge names it)."""
        positions = self.items.positions
        hits = sum(1 for unique in positions if self.found[unique] is not None)
        headers = {"X-Cache": result, "X-Cache-Items": f"{hits}/{len(positions)}"}
        if len(self.items.digests) == 1:
            headers["X-Cache-Key"] = self.items.digests[0]
        return headers

    def unpaid_tokens(self, fetched: Mapping[int, int]) -> int | None:
        """Tokens of the input positions no upstream call paid for: cached items, and repeats of
        a fetched item (``fetched``: unique item → its tokens); None when there are none."""
        tokens, paid, unpaid = 0, set(), False
        for unique in self.items.positions:
            entry = self.found[unique]
            if entry is None and unique not in paid:
                paid.add(unique)
                continue
            unpaid = True
            tokens += entry.meta.prompt_tokens if entry is not None else fetched.get(unique, 0)
        return tokens if unpaid else None
