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


class StoreUnavailable(Exception):
    """A store (cache Redis, state Redis, the flight lock) failed or was too slow.

    Raised by ``guarded`` only; everywhere else in the proxy catches this one type: the cache is
    bypassed, a key lookup answers 503, a flight is led alone, a budget fails open or closed.
    """


# What a Redis call raises when Redis is away or slow. RedisClusterException is not a
# RedisError: the cluster client raises it when no startup node answers (e.g. at boot) or a slot
# has no live primary. Only ``guarded`` (and a health ping) may name these.
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError, TimeoutError)


@contextlib.asynccontextmanager
async def guarded(what: str, seconds: float | None) -> AsyncIterator[None]:
    """Bound a store call by ``seconds`` (None: unbounded, e.g. an admin call) and turn any Redis
    failure or timeout into ``StoreUnavailable``."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except REDIS_FAILURES as exc:
        raise StoreUnavailable(f"{what} failed: {type(exc).__name__}: {exc}") from exc


class ByteStore(Protocol):
    """What the response cache needs from a key/value store of bytes."""

    async def get(self, key: str) -> bytes | None: ...
    async def mget(self, keys: Sequence[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl: int) -> None: ...
    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: int) -> None: ...
    async def put_blobs(self, items: Sequence[tuple[str, bytes]], ttl: int) -> None: ...
    async def delete(self, keys: Sequence[str]) -> int: ...
    async def keys_with_prefix(self, prefix: str) -> list[str]: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
