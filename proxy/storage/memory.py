"""The embedded store: a byte-bounded LRU (aiocache's SimpleMemoryCache has no size bound), no Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiocache.base import BaseCache
from aiocache.serializers import NullSerializer

from proxy.util.lru import ByteLRU


class LRUMemoryCache(BaseCache):  # type: ignore[misc]  # aiocache ships no type hints
    """Holds ``bytes`` values up to ``max_bytes`` in total (``util.lru.ByteLRU``), evicting least
    recently used first.

    TTLs are checked lazily against a monotonic clock instead of one timer per key (what
    SimpleMemoryCache does), so a million entries cost no timer handles.
    """

    NAME = "lru-memory"

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__(serializer=NullSerializer(encoding=None), **kwargs)
        self._clock = clock
        self._data: ByteLRU[tuple[bytes, float | None]] = ByteLRU(max_bytes)

    @property
    def max_bytes(self) -> int:
        """The byte bound (``PROXY_MEMORY_CACHE_BYTES``)."""
        return self._data.max_bytes

    @property
    def used_bytes(self) -> int:
        """Bytes of the values held right now."""
        return self._data.used_bytes

    def _live(self, key: str) -> bytes | None:
        found = self._data.get(key)
        if found is None:
            return None
        value, deadline = found[0]
        if deadline is not None and deadline <= self._clock():
            self._data.discard(key)
            return None
        self._data.touch(key)
        return value

    def remaining_ttl(self, key: str) -> float | None:
        """Seconds left for ``key`` (None: no expiry or absent)."""
        found = self._data.get(key)
        if found is None or found[0][1] is None:
            return None
        return max(0.0, found[0][1] - self._clock())

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix`` (admin purge; O(n) is fine there)."""
        return [k for k in self._data.snapshot() if k.startswith(prefix)]

    async def _get(self, key: str, encoding: str | None = None, _conn: Any = None) -> bytes | None:
        return self._live(key)

    async def _gets(self, key: str, encoding: str | None = None, _conn: Any = None) -> bytes | None:
        return self._live(key)

    async def _multi_get(
        self, keys: Iterable[str], encoding: str | None = None, _conn: Any = None
    ) -> list[bytes | None]:
        return [self._live(k) for k in keys]

    async def _set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        _cas_token: Any = None,
        _conn: Any = None,
    ) -> bool:
        deadline = self._clock() + ttl if ttl else None
        return self._data.put(key, (value, deadline), len(value))

    async def _multi_set(
        self, pairs: Iterable[tuple[str, bytes]], ttl: float | None = None, _conn: Any = None
    ) -> bool:
        for key, value in pairs:
            await self._set(key, value, ttl=ttl)
        return True

    async def _add(self, key: str, value: bytes, ttl: float | None = None, _conn: Any = None) -> bool:
        if self._live(key) is not None:
            raise ValueError(f"Key {key} already exists, use .set to update the value")
        return await self._set(key, value, ttl=ttl)

    async def _exists(self, key: str, _conn: Any = None) -> bool:
        return self._live(key) is not None

    async def _increment(self, key: str, delta: int, _conn: Any = None) -> int:
        current = self._live(key)
        value = (int(current) if current is not None else 0) + delta
        await self._set(key, str(value).encode())
        return value

    async def _expire(self, key: str, ttl: float, _conn: Any = None) -> bool:
        value = self._live(key)
        if value is None:
            return False
        return self._data.put(key, (value, self._clock() + ttl if ttl else None), len(value))

    async def _delete(self, key: str, _conn: Any = None) -> int:
        return int(self._data.discard(key) is not None)

    async def _clear(self, namespace: str | None = None, _conn: Any = None) -> bool:
        if namespace:
            for key in self.keys_with_prefix(namespace):
                self._data.discard(key)
        else:
            self._data.clear()
        return True

    async def _raw(self, command: str, *args: Any, _conn: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError(f"raw command {command!r} on the memory store")

    async def _redlock_release(self, key: str, value: Any) -> int:
        if self._live(key) == value:
            return int(self._data.discard(key) is not None)
        return 0

    async def _close(self, *args: Any, _conn: Any = None, **kwargs: Any) -> None:
        return None


class MemoryStore:
    """The embedded default: a byte-bounded LRU (``PROXY_MEMORY_CACHE_BYTES``), no Redis needed."""

    def __init__(self, max_bytes: int) -> None:
        self.cache = LRUMemoryCache(max_bytes=max_bytes, timeout=None)

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.cache.get(key)
        return value

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = await self.cache.multi_get(list(keys))
        return values

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        await self.cache.set(key, value, ttl=ttl)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: int) -> None:
        await self.cache.multi_set(list(items), ttl=ttl)

    async def put_blob(self, key: str, value: bytes, ttl: int) -> None:
        remaining = self.cache.remaining_ttl(key)
        if await self.cache.exists(key):
            if remaining is not None and remaining < ttl:
                await self.cache.expire(key, ttl)
            return
        await self.cache.set(key, value, ttl=ttl)

    async def put_blobs(self, items: Sequence[tuple[str, bytes]], ttl: int) -> None:
        for key, value in items:
            await self.put_blob(key, value, ttl)

    async def delete(self, keys: Sequence[str]) -> int:
        return sum([int(await self.cache.delete(k)) for k in keys])

    async def keys_with_prefix(self, prefix: str) -> list[str]:
        return self.cache.keys_with_prefix(prefix)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
