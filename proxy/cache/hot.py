"""The in-process hot tier: ready-to-send response bytes for the most recently served entries.

Serving a 2 MB image hit from Redis means moving 1.5 MB over a socket and base64-encoding it on
every request; from here it is one socket write. Correctness across replicas comes from
revalidation, not from messages that can be lost: an entry older than ``revalidate_after`` is
compared with the (small) stored entry record before it is served again, so a purge or refresh on
any replica is seen within that interval, and nothing is served past its expiry time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.util.lru import ByteLRU

if TYPE_CHECKING:
    from proxy.cache.entry import CachedEntry


@dataclass(slots=True)
class HotItem:
    """One hot entry: the stored record it was built from, when it was last confirmed, its size."""

    record: bytes
    entry: CachedEntry
    size: int
    expires: float
    validated_at: float


class HotTier:
    """The hot entries, in the byte-bounded LRU (``PROXY_HOT_CACHE_BYTES``)."""

    def __init__(self, max_bytes: int, revalidate_after: float = 1.0) -> None:
        self.max_bytes = max_bytes
        self.revalidate_after = revalidate_after
        self._items: ByteLRU[HotItem] = ByteLRU(max_bytes)

    @property
    def used_bytes(self) -> int:
        """Bytes held right now."""
        return self._items.used_bytes

    def get(self, key: str, now: float) -> HotItem | None:
        """The item if present and not expired (expired ones are dropped)."""
        found = self._items.get(key)
        if found is None:
            return None
        item = found[0]
        if now >= item.expires:
            self._items.discard(key)
            return None
        self._items.touch(key)
        return item

    def put(self, key: str, item: HotItem) -> None:
        """Insert, evicting least recently used items past the byte bound."""
        if item.size > self.max_bytes // 4:
            return  # one giant response must not flush everything else
        self._items.put(key, item, item.size)

    def drop(self, key: str) -> None:
        """Forget ``key``."""
        self._items.discard(key)

    def drop_matching(self, predicate: Callable[[str], object]) -> int:
        """Forget every key ``predicate`` accepts (local half of a purge)."""
        doomed = [k for k in self._items.snapshot() if predicate(k)]
        for key in doomed:
            self._items.discard(key)
        return len(doomed)

    def __len__(self) -> int:
        return len(self._items)
