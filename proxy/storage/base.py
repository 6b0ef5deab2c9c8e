"""The byte store behind the cache, and the one outage vocabulary every other module uses.

``StoreUnavailable`` is what "the store is down or too slow" means anywhere in the proxy: every
Redis call is bounded by a timeout and wrapped by ``guarded``, which turns timeouts, ``RedisError``,
``RedisClusterException`` and ``OSError`` into it, so the request path can fall back to the upstream
(``X-Cache: BYPASS``) instead of hanging or crashing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from redis.exceptions import RedisClusterException, RedisError


class StoreError(Exception):
    """The store failed or was too slow; the caller bypasses the cache."""


# What a Redis call can raise when Redis is away or slow. RedisClusterException is not a
# RedisError: the cluster client raises it when no startup node answers (e.g. at boot).
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError, TimeoutError)


@contextlib.asynccontextmanager
async def guarded(what: str, seconds: float) -> AsyncIterator[None]:
    """Bound a store call by ``seconds`` and turn any Redis failure into ``StoreError``."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except REDIS_FAILURES as exc:
        raise StoreError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


class ByteStore(Protocol):
    """What the response cache needs from a key/value store of bytes."""

    async def get(self, key: str) -> bytes | None: ...
    async def mget(self, keys: Sequence[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl: int) -> None: ...
    async def put_blobs(self, items: Sequence[tuple[str, bytes]], ttl: int) -> None: ...
    async def delete(self, keys: Sequence[str]) -> int: ...
    async def keys_with_prefix(self, prefix: str) -> list[str]: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
