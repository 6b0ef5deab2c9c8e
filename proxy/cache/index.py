"""The index of cached image answers the operator console pages through (issue 14).

``ResponseCache`` tells it about every entry it stores, serves and purges (``EntryIndex``); only
entries with at least one image blob are kept. A page view reads one page of rows (newest first)
and never scans the store: the index is kept as entries are stored.

What the hit path pays: ``served`` adds one to an in-process counter (no I/O); ``stored`` appends
a row to an in-process list. Both are written out by ``flush``, which a background task of the
console runs every few seconds (and a page read runs first, so a replica sees its own writes).

Two backends, one behaviour:

- ``MemoryRows`` (the in-memory store): the rows live in this process, capped at ``cap``.
- ``RedisRows``: a sorted set ``{p}:ix:images`` (member ``{namespace}:{digest}``, score the
  entry's creation time) plus one hash per entry ``{p}:ix:e:{namespace}:{digest}`` with the
  entry's own TTL; the sorted set is trimmed to ``cap`` members and lives as long as its
  longest-lived entry. Every replica adds its rows and hit counts to the same keys.

A row whose entry expired, was evicted or purged elsewhere is dropped when a page meets it (the
page checks its entries with one ``MGET``), so the index never shows an entry that cannot be hit.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.cache.entry import CachedEntry, EntryMeta
from proxy.cache.response import Origin
from proxy.storage.base import ByteStore, StoreUnavailable, guarded

log = logging.getLogger(__name__)

EXCERPT_CHARS = 200  # of the prompt, as the console shows it
DEFAULT_CAP = 50_000  # rows kept (the oldest go first)
MAX_PAGE = 100
_BATCH = 500  # rows per Redis pipeline
# Entry ids are "{namespace}:{digest}": namespaces are [A-Za-z0-9_-] words joined by one "."
# (``cache.keys.safe_namespace``), digests 64 hex digits.
ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,200}(?:\.[A-Za-z0-9_-]{1,200})?:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ImageRow:
    """One cached image answer as the gallery lists it."""

    id: str  # "{namespace}:{digest}" (the entry key without the prefix)
    model: str
    excerpt: str  # the request's prompt, at most EXCERPT_CHARS characters
    created: float
    expires: float
    size: int  # bytes the entry and its blobs take in the store
    cost_micro: int  # what one upstream call for it cost: each hit saved that much
    images: int
    sha256: str  # the first image's blob: thumbnail and full view
    blob_size: int
    hits: int = 0

    @property
    def namespace(self) -> str:
        return self.id.rsplit(":", 1)[0]

    @property
    def digest(self) -> str:
        return self.id.rsplit(":", 1)[1]

    def to_fields(self) -> dict[str, str]:
        """The Redis hash of the row (``hits`` is counted by HINCRBY)."""
        return {name: str(value) for name, value in asdict(self).items() if name != "id"}

    @classmethod
    def from_fields(cls, row_id: str, fields: Mapping[Any, Any]) -> ImageRow | None:
        """The row a hash holds; None for a hash that is not a whole row (half expired, foreign)."""
        try:
            text = {_text(k): _text(v) for k, v in fields.items()}
            return cls(
                id=row_id,
                model=text["model"],
                excerpt=text["excerpt"],
                created=float(text["created"]),
                expires=float(text["expires"]),
                size=int(text["size"]),
                cost_micro=int(text["cost_micro"]),
                images=int(text["images"]),
                sha256=text["sha256"],
                blob_size=int(text["blob_size"]),
                hits=int(text.get("hits", "0")),
            )
        except (KeyError, ValueError, UnicodeDecodeError):
            return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def excerpt_of(text: str) -> str:
    """At most EXCERPT_CHARS characters of a prompt, control characters folded to spaces."""
    clipped = text[: EXCERPT_CHARS * 2]
    folded = "".join(ch if ch.isprintable() else " " for ch in clipped)
    return " ".join(folded.split())[:EXCERPT_CHARS]


class Rows(Protocol):
    """Where rows live: in this process, or in Redis for every replica."""

    async def add(self, rows: Sequence[ImageRow], now: float) -> None: ...
    async def add_hits(self, hits: dict[str, int]) -> None: ...
    async def page(self, offset: int, limit: int) -> tuple[list[ImageRow], int]: ...
    async def get(self, row_id: str) -> ImageRow | None: ...
    async def drop(self, row_ids: Sequence[str]) -> None: ...


class MemoryRows:
    """Rows in this process (the in-memory store is this process's too), oldest first in a list."""

    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        self.cap = cap
        self._rows: dict[str, ImageRow] = {}
        self._order: list[tuple[float, str]] = []  # (created, id), ascending; stale pairs skipped

    async def add(self, rows: Sequence[ImageRow], now: float) -> None:
        for row in rows:
            self._rows[row.id] = row
            pair = (row.created, row.id)
            at = bisect.bisect_left(self._order, pair)
            if at == len(self._order) or self._order[at] != pair:  # a dropped row's pair may remain
                self._order.insert(at, pair)
        if len(self._order) > self.cap * 2 or len(self._rows) > self.cap:
            self._compact()

    def _compact(self) -> None:
        """Drop stale pairs, then the oldest rows beyond the cap (amortised: at most every cap adds)."""
        live = [(c, i) for c, i in self._order if (row := self._rows.get(i)) is not None and row.created == c]
        for _, row_id in live[: max(0, len(live) - self.cap)]:
            del self._rows[row_id]
        self._order = live[-self.cap :]

    async def add_hits(self, hits: dict[str, int]) -> None:
        for row_id, count in hits.items():
            row = self._rows.get(row_id)
            if row is not None:
                self._rows[row_id] = _with_hits(row, row.hits + count)

    async def page(self, offset: int, limit: int) -> tuple[list[ImageRow], int]:
        out: list[ImageRow] = []
        index = len(self._order) - 1 - offset
        while index >= 0 and len(out) < limit:
            created, row_id = self._order[index]
            row = self._rows.get(row_id)
            if row is not None and row.created == created:
                out.append(row)
            index -= 1
        return out, len(self._rows)

    async def get(self, row_id: str) -> ImageRow | None:
        return self._rows.get(row_id)

    async def drop(self, row_ids: Sequence[str]) -> None:
        for row_id in row_ids:
            self._rows.pop(row_id, None)


def _with_hits(row: ImageRow, hits: int) -> ImageRow:
    return ImageRow(**{**asdict(row), "hits": hits})


# HINCRBY only on a row that still exists: a hit counted after the row expired must not create a
# hash without a TTL.
_ADD_HITS = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], 'hits', ARGV[1])
end
return 0
"""


class RedisRows:
    """Rows in Redis, shared by every replica (see the module docstring for the keys)."""

    def __init__(
        self, client: aioredis.Redis | RedisCluster, prefix: str, timeout: float, cap: int = DEFAULT_CAP
    ) -> None:
        self.client = client
        self.zset = f"{prefix}:ix:images"
        self.row_prefix = f"{prefix}:ix:e:"
        self.timeout = timeout
        self.cap = cap

    async def add(self, rows: Sequence[ImageRow], now: float) -> None:
        # Batches, each bounded by the op timeout: a backlog (the store was away) is many rows.
        for start in range(0, len(rows), _BATCH):
            await self._add(rows[start : start + _BATCH], now)

    async def _add(self, rows: Sequence[ImageRow], now: float) -> None:
        async with guarded("index add", self.timeout), self.client.pipeline(transaction=False) as pipe:
            for row in rows:
                ttl = max(1, int(row.expires - now))
                key = self.row_prefix + row.id
                pipe.delete(key)  # a refreshed entry starts over (hits included)
                pipe.hset(key, mapping=row.to_fields())  # type: ignore[arg-type]
                pipe.expire(key, ttl)
                pipe.zadd(self.zset, {row.id: row.created})
                # The set lives as long as its longest-lived row (NX: a new set has no TTL yet).
                pipe.expire(self.zset, ttl, nx=True)
                pipe.expire(self.zset, ttl, gt=True)
            pipe.zremrangebyrank(self.zset, 0, -(self.cap + 1))
            await pipe.execute()

    async def add_hits(self, hits: dict[str, int]) -> None:
        if not hits:
            return
        async with guarded("index hits", self.timeout), self.client.pipeline(transaction=False) as pipe:
            for row_id, count in hits.items():
                # EVAL (not EVALSHA): a pipeline cannot recover from NOSCRIPT; the script is tiny.
                pipe.eval(_ADD_HITS, 1, self.row_prefix + row_id, count)
            await pipe.execute()

    async def page(self, offset: int, limit: int) -> tuple[list[ImageRow], int]:
        async with guarded("index page", self.timeout):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zrevrange(self.zset, offset, offset + limit - 1)
                pipe.zcard(self.zset)
                ids_raw, total = await pipe.execute()
            ids = [raw.decode() for raw in ids_raw]
            if not ids:
                return [], int(total)
            async with self.client.pipeline(transaction=False) as pipe:
                for row_id in ids:
                    pipe.hgetall(self.row_prefix + row_id)
                hashes = await pipe.execute()
        rows: list[ImageRow] = []
        gone: list[str] = []
        for row_id, fields in zip(ids, hashes, strict=True):
            row = ImageRow.from_fields(row_id, fields) if fields else None
            if row is None:
                gone.append(row_id)
            else:
                rows.append(row)
        if gone:
            await self.drop(gone)
        return rows, int(total) - len(gone)

    async def get(self, row_id: str) -> ImageRow | None:
        async with guarded("index get", self.timeout):
            fields = await self.client.hgetall(self.row_prefix + row_id)
        return ImageRow.from_fields(row_id, fields) if fields else None

    async def drop(self, row_ids: Sequence[str]) -> None:
        if not row_ids:
            return
        async with guarded("index drop", self.timeout), self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(self.zset, *row_ids)
            for row_id in row_ids:
                pipe.delete(self.row_prefix + row_id)
            await pipe.execute()


class ImageIndex:
    """The ``EntryIndex`` of the response cache: image entries as stored, hit counts as served.

    ``price(model, meta)`` says what an entry's answer cost upstream (micro-USD), priced as the
    model the request named (as a hit's savings are): each hit saved that much.
    """

    def __init__(
        self,
        rows: Rows,
        store: ByteStore,
        prefix: str,
        price: Callable[[str, EntryMeta], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rows = rows
        self.store = store
        self.entry_prefix = f"{prefix}:r1:"
        self.price = price
        self.clock = clock
        self._new: list[ImageRow] = []
        self._hits: Counter[str] = Counter()
        self._gone: list[str] = []
        self._pending_cap = 10_000  # rows and counters held while the store is away
        # One flush at a time: a page read's flush must wait for the background flush that took
        # the pending counts, or the page is read before those counts are written (a hit that
        # happened just before the view would show 0).
        self._flushing = asyncio.Lock()

    # EntryIndex: called by the cache, synchronous, no I/O.

    def stored(self, entry: CachedEntry, size: int, origin: Origin | None) -> None:
        meta = entry.meta
        if not meta.blobs or not entry.key.startswith(self.entry_prefix):
            return
        if len(self._new) >= self._pending_cap:
            return
        row_id = entry.key[len(self.entry_prefix) :]
        if self._gone:  # purged, then stored again before a flush: the new row stays
            self._gone = [gone for gone in self._gone if gone != row_id]
        first = meta.blobs[0]
        model = origin.model if origin is not None and origin.model else meta.model
        self._new.append(
            ImageRow(
                id=row_id,
                model=model[:256],
                excerpt=excerpt_of(origin.prompt) if origin is not None else "",
                created=meta.created,
                expires=meta.expires if meta.expires != float("inf") else meta.created + 86400,
                size=size,
                cost_micro=self.price(model, meta),
                images=max(meta.images, len(meta.blobs)),
                sha256=first.sha256,
                blob_size=first.size,
            )
        )

    def served(self, key: str) -> None:
        # The hit path: one dict update (the cache calls it for entries with image blobs only).
        if len(self._hits) < self._pending_cap or key in self._hits:
            self._hits[key] += 1

    def removed(self, keys: Iterable[str]) -> None:
        # Purged: their rows go at the next flush (a page would drop them anyway, entry gone).
        gone = {key[len(self.entry_prefix) :] for key in keys if key.startswith(self.entry_prefix)}
        self._new = [row for row in self._new if row.id not in gone]  # stored, then purged: no row
        self._gone.extend(gone)
        del self._gone[: max(0, len(self._gone) - self._pending_cap)]

    # Console side.

    async def flush(self) -> None:
        """Write new rows and hit counts out (the background task, and every page read)."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        new, self._new = self._new, []
        hits, self._hits = self._hits, Counter()
        gone, self._gone = self._gone, []
        counted = {
            key[len(self.entry_prefix) :]: count
            for key, count in hits.items()
            if count > 0 and key.startswith(self.entry_prefix)
        }
        try:
            await self.rows.add(new, self.clock())
            await self.rows.add_hits(counted)
            await self.rows.drop(gone)
        except StoreUnavailable as exc:
            log.warning("image index not written (kept for the next flush): %s", exc)
            self._new = (new + self._new)[: self._pending_cap]
            self._gone = (gone + self._gone)[: self._pending_cap]
            for key, count in hits.items():
                self._hits[key] += count

    async def page(self, offset: int, limit: int) -> tuple[list[ImageRow], int]:
        """Rows newest first from ``offset``; rows whose entry is gone are dropped as met.

        Costs O(limit): one page of the index, one MGET of the page's entries.
        """
        await self.flush()
        limit = max(1, min(limit, MAX_PAGE))
        rows, total = await self.rows.page(max(0, offset), limit)
        if not rows:
            return rows, total
        records = await self.store.mget([self.entry_prefix + row.id for row in rows])
        now = self.clock()
        gone = [row.id for row, rec in zip(rows, records, strict=True) if rec is None or row.expires <= now]
        if gone:
            await self.rows.drop(gone)
        return [row for row in rows if row.id not in gone], total - len(gone)

    async def get(self, row_id: str) -> ImageRow | None:
        """One row by id (None when unknown)."""
        if not ENTRY_ID.fullmatch(row_id):
            return None
        await self.flush()
        return await self.rows.get(row_id)

    async def forget(self, row_ids: Sequence[str]) -> None:
        """Drop rows of purged entries."""
        await self.rows.drop([row_id for row_id in row_ids if ENTRY_ID.fullmatch(row_id)])

    def entry_key(self, row_id: str) -> str:
        """The store key of a row's entry."""
        return self.entry_prefix + row_id


def row_json(row: ImageRow, now: float) -> dict[str, Any]:
    """A row as the console's API shows it (strings are the page's to escape: it uses textContent)."""
    return {
        "id": row.id,
        "namespace": row.namespace,
        "key": row.digest,
        "model": row.model,
        "prompt": row.excerpt,
        "age_s": max(0, int(now - row.created)),
        "ttl_s": max(0, int(row.expires - now)),
        "created": row.created,
        "hits": row.hits,
        "size": row.size,
        "images": row.images,
        "cost_usd": row.cost_micro / 1_000_000,
        "saved_usd": row.hits * row.cost_micro / 1_000_000,
        "sha256": row.sha256,
        "blob_size": row.blob_size,
    }
