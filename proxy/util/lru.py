"""The one byte-bounded LRU: the memory store and the cache's hot tier both keep their bytes in it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """Values with the bytes each one holds, at most ``max_bytes`` in total: storing past the bound
    evicts the least recently used first. Expiry is the caller's (each has its own clock)."""

    __slots__ = ("_items", "max_bytes", "used_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self._items: OrderedDict[str, tuple[V, int]] = OrderedDict()

    def get(self, key: str) -> V | None:
        """The value, now the most recently used; None when absent."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def peek(self, key: str) -> V | None:
        """The value without counting as a use."""
        item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key: str, value: V, size: int) -> bool:
        """Store ``value`` (``size`` bytes), evicting past the bound; False (nothing changes) when it
        alone is larger than the bound."""
        if size > self.max_bytes:
            return False
        self.pop(key)
        self._items[key] = (value, size)
        self.used_bytes += size
        while self.used_bytes > self.max_bytes:
            self.pop(next(iter(self._items)))
        return True

    def pop(self, key: str) -> V | None:
        """Forget ``key``; its value, if it had one."""
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.used_bytes -= item[1]
        return item[0]

    def __iter__(self) -> Iterator[str]:
        """Every key, least recently used first (a snapshot: callers may pop while iterating)."""
        return iter(list(self._items))

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()
        self.used_bytes = 0

    def __len__(self) -> int:
        return len(self._items)
