"""The response cache: lookup, store and purge of complete answers, and the writes still pending.

It owns the entry format (``cache.entry``): callers hand it a response as the client got it
(``put(key, raw, doc, ...)``) and get entries back; they never build a store key beyond
``entry_key`` or split a payload. The endpoint's walk (``BlobWalk``) says where payloads may sit.

Keys: ``{prefix}:r1:{namespace}:{digest}`` for entries, ``{prefix}:blob:{sha256}:{i}`` for blob
chunks (docs/architecture.md lists every key with its TTL).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.cache.entry import BlobWalk, CachedEntry, EntryMeta, decode_entry, encode_entry, split_response
from proxy.cache.hot import HotItem, HotTier
from proxy.obs.usage import Usage
from proxy.storage.base import ByteStore, StoreUnavailable
from proxy.util.tasks import TaskSet

log = logging.getLogger(__name__)

# Blobs are stored in chunks that fill one jemalloc size class exactly (256 KiB, less room for
# Redis' string header). Stored whole, a 1.26 MB PNG would occupy a 1.5 MiB allocation (+19%);
# chunked, the waste is at most the rounding of the last chunk (< 32 KiB).
BLOB_CHUNK_BYTES = 256 * 1024 - 64
# The Python objects of a hot item beside its bytes (HotItem, CachedEntry, EntryMeta, the LRU
# slot): measured with tracemalloc, a 288-byte text entry holds ~1.3 KB, 0.7 KB of it bytes. The
# hot tier's bound counts them, or thousands of text entries would outgrow it unseen.
_HOT_ITEM_OVERHEAD = 640


@dataclass(frozen=True, slots=True)
class Origin:
    """The request an entry answers, as the index lists it: the model asked for (what a hit is
    priced as) and its prompt (bounded by the caller)."""

    model: str
    prompt: str


# Writes an entry record (key, record, ttl) in place of ``ByteStore.set``: see ``ResponseCache.put``.
RecordWriter = Callable[[str, bytes, int], Awaitable[None]]


class EntryIndex(Protocol):
    """Told about entries as they are stored, served and purged (issue 14: the console's index of
    cached images, newest first with model, size and hit count, without a SCAN per page).

    ``ResponseCache(index=...)`` calls it (``cache.index.ImageIndex``, plugged in by the app when
    the console is on). ``origin`` is the request's model and prompt, handed to ``put`` by the
    pipeline (``endpoints.fields.prompt_text``). All three run on the request path: no I/O.
    """

    def stored(self, entry: CachedEntry, size: int, origin: Origin | None) -> None: ...
    def served(self, key: str) -> None: ...
    def removed(self, keys: Iterable[str]) -> None: ...


class ResponseCache:
    """Looks up and stores complete responses; tracks its own writes still in progress."""

    def __init__(
        self,
        store: ByteStore,
        prefix: str,
        clock: Callable[[], float] = time.time,
        hot: HotTier | None = None,
        *,
        max_entry_bytes: int = 32 * 1024 * 1024,
        store_timeout: float = 0.25,
        on_store_error: Callable[[str], None] = lambda _op: None,
        index: EntryIndex | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.clock = clock
        self.hot = hot
        self.max_entry_bytes = max_entry_bytes
        self.store_timeout = store_timeout
        self.on_store_error = on_store_error  # counts a failed write ("set") as a metric
        self.index = index
        self.writes = TaskSet("background store(s)")  # answers sent, entries not stored yet

    def entry_key(self, namespace: str, digest: str) -> str:
        """Store key of an entry."""
        return f"{self.prefix}:r1:{namespace}:{digest}"

    def blob_keys(self, sha256: str, size: int) -> list[str]:
        """Store keys of a blob's chunks (see ``BLOB_CHUNK_BYTES``)."""
        count = max(1, -(-size // BLOB_CHUNK_BYTES))
        return [f"{self.prefix}:blob:{sha256}:{index}" for index in range(count)]

    def fresh(self, key: str, max_age: int | None) -> CachedEntry | None:
        """The hot entry under ``key`` if it was confirmed within ``revalidate_after``: no I/O.

        This is the hot path: a hot image hit is served from here without touching the store.
        """
        if self.hot is None:
            return None
        now = self.clock()
        hot = self.hot.get(key, now)
        if hot is None or now - hot.validated_at >= self.hot.revalidate_after:
            return None
        return self._young(hot.entry, max_age, now)

    async def lookup(self, key: str, max_age: int | None = None) -> CachedEntry | None:
        """The entry under ``key`` if complete, unexpired and young enough (raises StoreUnavailable)."""
        entry = self.fresh(key, max_age)
        if entry is not None:
            return entry
        return await self.open(key, await self.store.get(key), max_age)

    async def open(self, key: str, record: bytes | None, max_age: int | None) -> CachedEntry | None:
        """The entry a record just read under ``key`` stands for (None: there was none).

        Corrupt or orphaned records are dropped. A hot entry older than ``revalidate_after`` is
        served again when the record is still the one it was built from (a GET of the small
        record, never the blobs, confirms it); otherwise the blobs are read in one MGET.
        """
        now = self.clock()
        hot = self.hot.get(key, now) if self.hot is not None else None
        if record is None:
            if hot is not None and self.hot is not None:
                self.hot.drop(key)  # purged or expired elsewhere
            return None
        if hot is not None and record == hot.record:
            hot.validated_at = now
            return self._young(hot.entry, max_age, now)
        try:
            meta, template = decode_entry(record)
        except ValueError:
            await self.store.delete([key])
            return None
        if now >= meta.expires:
            return None
        blobs: tuple[bytes, ...] = ()
        if meta.blobs:
            blobs = await self._read_blobs(meta)
            if len(blobs) != len(meta.blobs):
                await self.store.delete([key])  # a blob was evicted: the entry can't be rebuilt
                return None
        entry = self._remember(key, record, CachedEntry(key, meta, template, blobs), now)
        return self._young(entry, max_age, now)

    def _young(self, entry: CachedEntry, max_age: int | None, now: float) -> CachedEntry | None:
        """``Cache-Control: max-age`` from the client: older entries are not acceptable to it."""
        if not entry.young_enough(max_age, now):
            return None
        return entry

    async def _read_blobs(self, meta: EntryMeta) -> tuple[bytes, ...]:
        """Every blob of an entry in one MGET; fewer blobs than refs means one is incomplete."""
        key_lists = [self.blob_keys(ref.sha256, ref.size) for ref in meta.blobs]
        values = await self.store.mget([key for keys in key_lists for key in keys])
        blobs: list[bytes] = []
        cursor = 0
        for ref, keys in zip(meta.blobs, key_lists, strict=True):
            chunks = values[cursor : cursor + len(keys)]
            cursor += len(keys)
            if any(chunk is None for chunk in chunks):
                break
            blob = b"".join(chunk for chunk in chunks if chunk is not None)
            if len(blob) != ref.size:
                break
            blobs.append(blob)
        return tuple(blobs)

    def _remember(self, key: str, record: bytes, entry: CachedEntry, now: float) -> CachedEntry:
        """Keep the entry hot (with its body ready) when the hot tier is on."""
        if self.hot is None or self.hot.max_bytes <= 0:
            return entry
        body = entry.json_body()
        ready = dataclasses.replace(entry, body=body)
        size = len(record) + len(body) + sum(len(b) for b in entry.blobs) + _HOT_ITEM_OVERHEAD
        self.hot.put(key, HotItem(record, ready, size, entry.meta.expires, now))
        return ready

    async def put(
        self,
        key: str,
        raw: bytes,
        doc: Mapping[str, Any],
        *,
        ttl: int,
        walk: BlobWalk,
        usage: Usage,
        origin: Origin | None = None,
        record_writer: RecordWriter | None = None,
    ) -> CachedEntry | None:
        """Store a complete response (``raw`` as the client got it, ``doc`` parsed): blobs first, then
        the entry, so a reader never sees an entry without its blobs.

        ``record_writer(key, record, ttl)`` writes the entry record instead of ``store.set`` (a
        flight's leader: with the end of its flight, in one round trip); when it raises
        StoreUnavailable the store's SET is tried (``_write_record``).

        Returns the stored entry, ready to serve (e.g. to coalesced followers); None when the
        response is over ``max_entry_bytes`` or the store failed (counted, logged, never raised:
        the client has its answer either way).
        """
        if len(raw) > self.max_entry_bytes:
            return None
        split = split_response(raw, doc, walk)
        created = self.clock()
        meta = EntryMeta(
            created=created,
            model=str(doc.get("model", "")),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            images=usage.images,
            blobs=split.refs,
            expires=created + ttl,
            image_prompt_tokens=usage.image_prompt_tokens,
            image_model=usage.image_model,
        )
        chunks: list[tuple[str, bytes]] = []
        for sha, data in split.blobs.items():
            for index, chunk_key in enumerate(self.blob_keys(sha, len(data))):
                chunks.append((chunk_key, data[index * BLOB_CHUNK_BYTES : (index + 1) * BLOB_CHUNK_BYTES]))
        encoded = encode_entry(meta, split.template)
        try:
            await self.store.put_blobs(chunks, ttl)
            await self._write_record(key, encoded, ttl, record_writer)
        except StoreUnavailable as exc:
            log.warning("cache store failed: %s", exc)
            self.on_store_error("set")
            return None
        blobs = tuple(split.blobs[ref.sha256] for ref in split.refs)
        entry = self._remember(
            key, encoded, CachedEntry(key, meta, memoryview(split.template), blobs), created
        )
        if self.index is not None:
            size = len(encoded) + sum(len(data) for data in split.blobs.values())
            self.index.stored(entry, size, origin)
        return entry

    async def _write_record(self, key: str, record: bytes, ttl: int, writer: RecordWriter | None) -> None:
        """The entry record, by ``writer`` if given; when that fails, by the store's own SET.

        The flight's scripting client does not retry (a lock script re-run after a lost reply would
        find its own lock); after a Redis restart its first call on each pooled connection fails.
        The store's SET retries once on a fresh connection, and the flight then ends as before.
        """
        if writer is not None:
            try:
                await writer(key, record, ttl)
            except StoreUnavailable as exc:
                log.debug("entry record with the flight's end failed, storing it alone: %s", exc)
            else:
                return
        await self.store.set(key, record, ttl)

    def put_behind(
        self,
        key: str,
        raw: bytes,
        doc: Mapping[str, Any],
        *,
        ttl: int,
        walk: BlobWalk,
        usage: Usage,
        then: Callable[[CachedEntry | None], Awaitable[None]],
        origin: Origin | None = None,
        record_writer: RecordWriter | None = None,
    ) -> None:
        """``put`` after the response went out, then ``then(entry)`` (e.g. end the flight with it).

        The write is this cache's until ``then`` returns: ``writes.drain`` (a purge, shutdown)
        waits for it.
        """

        async def write() -> None:
            entry = None
            try:
                entry = await self.put(
                    key, raw, doc, ttl=ttl, walk=walk, usage=usage, origin=origin, record_writer=record_writer
                )
            finally:
                await then(entry)

        self.writes.start(write())

    def served(self, entry: CachedEntry) -> None:
        """An entry went to a client (a hit, a coalesced or late follower): the index counts it
        (entries with image blobs only: the only ones it lists)."""
        if self.index is not None and entry.meta.blobs:
            self.index.served(entry.key)

    async def purge_namespace(self, namespace: str) -> int:
        """Delete the entries of ``namespace`` and of its ``X-Cache-Namespace`` sub-namespaces.

        Matched literally: an entry belongs to ``N`` iff its key is exactly ``{p}:r1:N:<digest>``
        or ``{p}:r1:N.<sub>:<digest>`` (namespaces never contain ``:`` or ``.``, see
        ``cache.keys.safe_namespace``), so ``*`` is just a name and ``team`` is not ``team:x``.
        Blobs expire on their own.
        """
        base = self.entry_key(namespace, "")[:-1]
        pattern = re.compile(re.escape(base) + r"(?:\.[A-Za-z0-9_-]+)?:[0-9a-f]{64}")
        return await self._purge_under(base, pattern.fullmatch)

    async def purge_all(self) -> int:
        """Delete every cached answer (every namespace); blobs expire on their own."""
        return await self._purge_under(f"{self.prefix}:r1:", lambda _key: True)

    async def purge_digest(self, digest: str) -> int:
        """Delete the entry with this ``X-Cache-Key`` in whatever namespace it lives (a scan)."""
        return await self._purge_under(f"{self.prefix}:r1:", lambda key: key.endswith(":" + digest))

    async def purge_key(self, key: str) -> int:
        """Delete one entry by its store key (the console's purge of one gallery row): no scan."""
        await self.writes.drain(max(self.store_timeout * 16, 5.0))
        if self.hot is not None:
            self.hot.drop(key)
        deleted = await self.store.delete([key])
        if self.index is not None:
            self.index.removed([key])
        return deleted

    async def _purge_under(self, prefix: str, belongs: Callable[[str], object]) -> int:
        """Delete the entries under ``prefix`` (a literal prefix, also in SCAN) that ``belongs`` accepts.

        Answers already sent may still be on their way into the store: the purge waits for this
        replica's pending writes first (each step of one is bounded by a few store timeouts).
        """
        await self.writes.drain(max(self.store_timeout * 16, 5.0))
        if self.hot is not None:
            # Every replica's hot copy: ours now, the others' on their next revalidation.
            self.hot.drop_matching(lambda key: key.startswith(prefix) and belongs(key))
        keys = [key for key in await self.store.keys_with_prefix(prefix) if belongs(key)]
        deleted = await self.store.delete(keys) if keys else 0
        if keys and self.index is not None:
            self.index.removed(keys)
        return deleted
