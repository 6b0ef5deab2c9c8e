"""The one byte-bounded LRU: the memory store and the cache's hot tier both keep their bytes in it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import TypeVar

V = TypeVar("V")


class ByteLRU(OrderedDict[str, tuple[V, int]]):
    """Values with the bytes each one holds, at most ``max_bytes`` in total: storing past the bound
    evicts the least recently used first. Expiry is the caller's (each has its own clock).

    Reads are ``OrderedDict``'s own C operations, because the hot tier reads on every hot hit:
    ``get(key)`` gives ``(value, size)`` without counting as a use, ``touch(key)`` counts one.
    Write only through ``put``, ``discard`` and ``clear``, which keep ``used_bytes`` right.
    """

    touch = OrderedDict.move_to_end  # a use: now the most recently used

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.used_bytes = 0

    def put(self, key: str, value: V, size: int) -> bool:
        """Store ``value`` (``size`` bytes), evicting past the bound; False (nothing changes) when it
        alone is larger than the bound."""
        if size > self.max_bytes:
            return False
        self.discard(key)
        self[key] = (value, size)
        self.used_bytes += size
        while self.used_bytes > self.max_bytes:
            self.discard(next(iter(self)))
        return True

    def discard(self, key: str) -> V | None:
        """Forget ``key``; its value, if it had one."""
        item = super().pop(key, None)
        if item is None:
            return None
        self.used_bytes -= item[1]
        return item[0]

    def clear(self) -> None:
        """Forget everything."""
        super().clear()
        self.used_bytes = 0

    def snapshot(self) -> Iterator[str]:
        """Every key, least recently used first, as of now (callers may discard while iterating)."""
        return iter(list(self))
