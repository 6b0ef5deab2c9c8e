"""Recently identified request bodies: a byte-identical body is not parsed, checked or canonicalised again.

A cache hit is, almost always, a client sending again the very bytes it sent before (same SDK, same
serialisation). Parsing and validating them again, re-serialising them canonically and hashing
that was most of a text hit's own work and, for a vision-edit request (a ~2 MB data URL inside
``messages``), over half of the hit (``bench/profiles/``): ``orjson.loads`` 0.7 ms, canonical JSON
0.1 ms, its digest 0.4 ms. Here the body's BLAKE3 (0.4 ms per 2 MB, one pass, no copy) finds what
the endpoint made of the same bytes last time: its ``Parsed`` and the request's digest. (A body
of at most 16 KiB is its own key: cheaper than any digest.)

Sound because an endpoint's ``parse`` and ``key_fields`` are pure functions of the body and the
whole ``Content-Type`` header (``endpoints.base``): both are in the memo's key, with the endpoint.
The key is the body itself or a collision-resistant digest of it (BLAKE3), so no other body can
claim an entry.
Only successful parses are remembered: a refused body is refused again, with the same 400, by
``parse`` itself. The ``Parsed`` is shared by every request with these bytes: nothing may mutate
its ``body`` (it is typed ``Mapping``; endpoints copy it to change it, ``forward_body``).

Bounded in bytes (each entry is charged twice its body: the bytes and what was decoded from them),
least recently used first out; a body over a quarter of the bound is not remembered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blake3 import blake3

from proxy.cache.keys import entry_digest, request_digest
from proxy.util.lru import ByteLRU
from proxy.util.memo import remember

if TYPE_CHECKING:
    from proxy.endpoints.base import Endpoint, Parsed

MEMO_BYTES = 32 * 1024 * 1024
_MAX_ENTRY_DIGESTS = 4096
# The Parsed beside the raw bytes and the key: measured with tracemalloc, a 187-byte chat body's
# entry holds ~1.8 KB in all (its parsed dict is many small objects), 1.1 KB with 512 here.
_ENTRY_OVERHEAD = 1280
_INLINE_KEY_BYTES = 16 * 1024


class RequestMemo:
    """``Parsed`` + request digest per (endpoint, ``Content-Type``, body digest)."""

    __slots__ = ("_digests", "_items")

    def __init__(self, max_bytes: int = MEMO_BYTES) -> None:
        self._items: ByteLRU[tuple[Parsed, bytes]] = ByteLRU(max_bytes)
        self._digests: dict[tuple[bytes, str, str], str] = {}

    def entry_digest(self, request: bytes, namespace: str, scope: str) -> str:
        """``cache.keys.entry_digest``, remembered (bounded) for the requests and callers seen
        lately: the same caller repeating a request gets the same entry with no hashing at all."""
        key = (request, namespace, scope)
        digest = self._digests.get(key)
        if digest is None:
            digest = remember(self._digests, key, entry_digest(request, namespace, scope), _MAX_ENTRY_DIGESTS)
        return digest

    def identify(self, endpoint: Endpoint, raw: bytes, content_type: str) -> tuple[Parsed, bytes]:
        """What ``endpoint`` makes of ``raw``: its ``Parsed`` and the ``request_digest`` of its key
        fields; from the memo when these exact bytes were identified before (a 400 propagates)."""
        prefix = f"{endpoint.name}\x00{content_type}\x00"
        # A small body is its own key (latin-1 maps each byte to one character: exact, and a dict
        # compares keys whole); a large one is keyed by its BLAKE3, cheaper than hashing and
        # keeping a second copy of megabytes.
        key = prefix + (raw.decode("latin-1") if len(raw) <= _INLINE_KEY_BYTES else blake3(raw).hexdigest())
        found = self._items.get(key)
        if found is not None:
            self._items.touch(key)
            return found[0]
        parsed = endpoint.parse(raw, content_type)
        digest = request_digest(endpoint.key_fields(parsed))
        size = 2 * len(raw) + len(key) + _ENTRY_OVERHEAD
        if size <= self._items.max_bytes // 4:
            self._items.put(key, (parsed, digest), size)
        return parsed, digest

    def __len__(self) -> int:
        return len(self._items)
