"""The response cache: entries (template + meta) and content-addressed image blobs in a ByteStore."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

from proxy.cache.entry import (
    EntryMeta,
    SplitResponse,
    decode_entry,
    encode_entry,
    image_owner,
    image_urls,
    rebuild_parts,
)
from proxy.cache.hot import HotItem, HotTier
from proxy.storage.base import ByteStore, StoreError
from proxy.upstream.sse import replay_chunks, sse

# Blobs are stored in chunks that fill one jemalloc size class exactly (256 KiB, less room for
# Redis' string header). Stored whole, a 1.26 MB PNG would occupy a 1.5 MiB allocation (+19%);
# chunked, the waste is at most the rounding of the last chunk (< 32 KiB).
BLOB_CHUNK_BYTES = 256 * 1024 - 64


@dataclass(frozen=True, slots=True)
class CachedEntry:
    """A hit: the stored meta, the template and the blob bytes in splice order."""

    key: str
    meta: EntryMeta
    template: memoryview
    blobs: tuple[bytes, ...]
    body: bytes | None = None  # the whole JSON body, kept ready by the hot tier

    def young_enough(self, max_age: int | None, now: float) -> bool:
        """Whether a client sending ``Cache-Control: max-age`` accepts this entry (RFC 9111 §5.2.1.1)."""
        return max_age is None or now - self.meta.created < max_age

    def age(self, now: float) -> int:
        """Whole seconds since the entry was stored (the ``Age`` header)."""
        return max(0, int(now - self.meta.created))

    def body_parts(self) -> list[bytes | memoryview]:
        """The exact JSON body first sent to a client, as parts ready to write."""
        return list(rebuild_parts(self.template, self.meta.blobs, self.blobs))

    def json_body(self) -> bytes:
        """The exact JSON body first sent to a client, in one piece."""
        if self.body is not None:
            return self.body
        return b"".join(self.body_parts())

    def document(self) -> dict[str, Any]:
        """The response with image payloads still cut out (cheap: the template is small)."""
        doc: dict[str, Any] = orjson.loads(self.template)
        return doc

    def sse_parts(self, include_usage: bool) -> Iterator[bytes]:
        """The entry replayed as OpenAI SSE, images spliced in by position without re-parsing them.

        Parts are written as they come, so an event may span several: each ~2 MB base64 image is
        yielded on its own, as encoded, instead of being copied into a joined event and again
        into its ``data: ...\n\n`` framing (three 2 MB copies per streamed image hit).

        The references are checked against the template before anything is returned (a
        ``ValueError`` means the entry is corrupt and nothing was sent yet).
        """
        doc = self.document()
        holes: dict[int, bytes] = {}
        for ref, blob in zip(self.meta.blobs, self.blobs, strict=True):
            owner = image_owner(doc, ref)
            if owner is None:
                raise ValueError(f"entry {self.key}: no image at choice {ref.choice}, image {ref.image}")
            holes[id(owner)] = blob
        return _replay(doc, holes, include_usage)


def _replay(doc: dict[str, Any], holes: dict[int, bytes], include_usage: bool) -> Iterator[bytes]:
    """SSE events of ``doc``; an image chunk whose ``image_url`` object is a hole gets its payload.

    ``replay_chunks`` puts the document's own ``image_url`` objects into its image chunks, so an
    image is recognised by identity: no content is ever searched for a marker.
    """
    for chunk in replay_chunks(doc, include_usage):
        owner = _chunk_image_url(chunk)
        blob = holes.get(id(owner)) if owner is not None else None
        if owner is None or blob is None:
            yield sse(orjson.dumps(chunk))
            continue
        head, tail = _split_after_url(chunk, owner)
        yield b"data: " + head
        yield pybase64.b64encode(blob)
        yield tail + b"\n\n"
    yield sse(b"[DONE]")


def _chunk_image_url(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """The ``image_url`` object of an image chunk (``replay_chunks`` sends one image per chunk)."""
    for choice in chunk.get("choices") or ():
        for image in (choice.get("delta") or {}).get("images") or ():
            owner = image.get("image_url") if isinstance(image, dict) else None
            return owner if isinstance(owner, dict) else None
    return None


def _split_after_url(chunk: dict[str, Any], owner: dict[str, Any]) -> tuple[bytes, bytes]:
    """The serialised chunk, cut where ``owner``'s URL text ends: where the payload belongs.

    Found from the structure, never by searching: the chunk is serialised a second time with one
    more character at the end of that URL, and the first byte where the two differ is the end of
    the URL's text (base64 needs no JSON escaping, so the payload goes there as it is).
    """
    url = owner["url"]
    plain = orjson.dumps(chunk)
    owner["url"] = url + "A"
    longer = orjson.dumps(chunk)
    owner["url"] = url
    end = next(i for i, (a, b) in enumerate(zip(plain, longer, strict=False)) if a != b)
    return plain[:end], plain[end:]


class ResponseCache:
    """Looks up and stores complete chat completion responses.

    Keys: ``{prefix}:r1:{namespace}:{hash}`` for entries, ``{prefix}:blob:{sha256}`` for PNG bytes.
    """

    def __init__(
        self,
        store: ByteStore,
        prefix: str,
        clock: Callable[[], float] = time.time,
        hot: HotTier | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.clock = clock
        self.hot = hot

    def entry_key(self, namespace: str, digest: str) -> str:
        """Redis key of an entry."""
        return f"{self.prefix}:r1:{namespace}:{digest}"

    def blob_keys(self, sha256: str, size: int) -> list[str]:
        """Redis keys of an image blob's chunks (see ``BLOB_CHUNK_BYTES``)."""
        count = max(1, -(-size // BLOB_CHUNK_BYTES))
        return [f"{self.prefix}:blob:{sha256}:{index}" for index in range(count)]

    async def lookup(  # noqa: PLR0911 - each early return is one documented way an entry is unusable
        self,
        key: str,
        max_age: int | None = None,
        fetch: Callable[[str], Awaitable[bytes | None]] | None = None,
    ) -> CachedEntry | None:
        """The entry under ``key`` if complete, unexpired and young enough.

        Corrupt or orphaned records are dropped. A hot entry confirmed within the last
        ``revalidate_after`` seconds is served without touching the store; an older one costs a
        GET of the small entry record (never the blobs) to confirm it is still the stored one.
        ``fetch`` replaces that GET (single flight reads the record and takes its lock in one go).
        """
        now = self.clock()
        hot = self.hot.get(key, now) if self.hot is not None else None
        if hot is not None and self.hot is not None and now - hot.validated_at < self.hot.revalidate_after:
            return _young(hot.entry, max_age, now)
        raw = await (fetch or self.store.get)(key)
        if raw is None:
            if hot is not None and self.hot is not None:
                self.hot.drop(key)  # purged or expired elsewhere
            return None
        if hot is not None and raw == hot.record:
            hot.validated_at = now
            return _young(hot.entry, max_age, now)
        try:
            meta, template = decode_entry(raw)
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
        entry = self._remember(key, raw, CachedEntry(key, meta, template, blobs), now)
        return _young(entry, max_age, now)

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
        size = len(record) + len(body) + sum(len(b) for b in entry.blobs)
        self.hot.put(key, HotItem(record, ready, size, entry.meta.expires, now))
        return ready

    async def put(self, key: str, split: SplitResponse, meta: EntryMeta, ttl: int) -> CachedEntry:
        """Store blobs first, then the entry (a reader never sees an entry without its blobs).

        Returns the stored entry, ready to serve (e.g. to coalesced followers).
        """
        meta = dataclasses.replace(meta, expires=meta.created + ttl)
        chunks: list[tuple[str, bytes]] = []
        for sha, data in split.blobs.items():
            for index, chunk_key in enumerate(self.blob_keys(sha, len(data))):
                chunks.append((chunk_key, data[index * BLOB_CHUNK_BYTES : (index + 1) * BLOB_CHUNK_BYTES]))
        await self.store.put_blobs(chunks, ttl)
        encoded = encode_entry(meta, split.template)
        await self.store.set(key, encoded, ttl)
        blobs = tuple(split.blobs[ref.sha256] for ref in split.refs)
        entry = CachedEntry(key, meta, memoryview(split.template), blobs)
        return self._remember(key, encoded, entry, self.clock())

    async def purge_namespace(self, namespace: str) -> int:
        """Delete the entries of ``namespace`` and of its ``X-Cache-Namespace`` sub-namespaces.

        Matched literally: an entry belongs to ``N`` iff its key is exactly ``{p}:r1:N:<digest>``
        or ``{p}:r1:N.<sub>:<digest>`` (namespaces never contain ``:`` or ``.``, see
        ``cache_key.safe_namespace``), so ``*`` is just a name and ``team`` is not ``team:x``.
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

    async def _purge_under(self, prefix: str, belongs: Callable[[str], object]) -> int:
        """Delete the entries under ``prefix`` (a literal prefix, also in SCAN) that ``belongs`` accepts."""
        if self.hot is not None:
            # Every replica's hot copy: ours now, the others' on their next revalidation.
            self.hot.drop_matching(lambda key: key.startswith(prefix) and belongs(key))
        keys = [key for key in await self.store.keys_with_prefix(prefix) if belongs(key)]
        return await self.store.delete(keys) if keys else 0


def _young(entry: CachedEntry, max_age: int | None, now: float) -> CachedEntry | None:
    """``Cache-Control: max-age`` from the client: older entries are not acceptable to it."""
    return entry if entry.young_enough(max_age, now) else None


def meta_for(doc: dict[str, Any], split: SplitResponse, created: float) -> EntryMeta:
    """Entry meta from a complete response document."""
    usage = doc.get("usage") or {}
    return EntryMeta(
        created=created,
        model=str(doc.get("model", "")),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        images=len(image_urls(doc)),
        blobs=split.refs,
    )


__all__ = ["CachedEntry", "ResponseCache", "StoreError", "meta_for"]
