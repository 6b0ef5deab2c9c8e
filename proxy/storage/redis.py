"""Redis as the byte store: aiocache for plain GET/MGET/SET, a redis-py client beside it for
pipelines, scans and (in ``proxy.flight``, ``proxy.budget``) Lua scripts."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote, urlparse

import redis.asyncio as aioredis
from aiocache import RedisCache
from aiocache.serializers import NullSerializer
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.storage.base import StoreUnavailable, guarded


def glob_escape(literal: str) -> str:
    """``literal`` as a Redis glob pattern matching only itself (``*?[]\\`` escaped, see SCAN MATCH)."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in literal)


_GLOB_SPECIAL = frozenset("*?[]\\^")


def redis_cache_kwargs(url: str) -> dict[str, object]:
    """aiocache's RedisCache takes host/port/db/password rather than a URL."""
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss"}:
        raise ValueError(f"unsupported Redis URL scheme {parsed.scheme!r} (redis:// or rediss://)")
    db = parsed.path.lstrip("/") or "0"
    return {
        "endpoint": parsed.hostname or "127.0.0.1",
        "port": parsed.port or 6379,
        "db": int(db),
        "password": unquote(parsed.password) if parsed.password else None,
        "ssl": parsed.scheme == "rediss",
    }


def _one_retry() -> Retry:
    """Retry a GET/MGET/SET once on a fresh connection: after a Redis restart every pooled
    connection is dead, and without this the first store on each is lost. Still bounded by the
    store timeout. Not on the scripting client: a lock script re-run after a lost reply would find
    its own lock taken and wait for it to lapse."""
    return Retry(NoBackoff(), 1)


class RedisClientOps:
    """Store operations both Redis flavours run through a redis-py client (plain or cluster).

    ``DEL`` and ``SCAN`` are multi-slot safe on the cluster client: it splits ``DEL`` by slot and
    scans every primary; the blob pipelines hold single-key commands only.
    """

    client: aioredis.Redis | RedisCluster
    timeout: float

    async def put_blobs(self, items: Sequence[tuple[str, bytes]], ttl: int) -> None:
        """Store content-addressed blobs once; existing ones only get their TTL extended.

        Two round trips whatever the count: ``EXPIRE … GT`` + ``EXISTS`` for every key (``GT``
        never shortens the life of a blob another entry still refers to), then ``SET`` for the
        missing ones only, so a PNG already stored is never sent again.
        """
        if not items:
            return
        async with guarded("blob SET", self.timeout * 4):
            async with self.client.pipeline(transaction=False) as pipe:
                for key, _ in items:
                    pipe.expire(key, ttl, gt=True)
                    pipe.exists(key)
                present = (await pipe.execute())[1::2]
            missing = [(key, value) for (key, value), found in zip(items, present, strict=True) if not found]
            if missing:
                async with self.client.pipeline(transaction=False) as pipe:
                    for key, value in missing:
                        pipe.set(key, value, ex=ttl)
                    await pipe.execute()

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        async with guarded("DEL", self.timeout * 4):
            return int(await self.client.delete(*keys))

    async def keys_with_prefix(self, prefix: str) -> list[str]:
        found: list[str] = []
        async with guarded("SCAN", max(self.timeout * 40, 10.0)):
            async for key in self.client.scan_iter(match=f"{glob_escape(prefix)}*", count=1000):
                found.append(key.decode() if isinstance(key, bytes) else str(key))
        return found

    async def ping(self) -> bool:
        """Whether Redis answers within the store timeout.

        Tried twice: a pooled connection to a Redis that has just restarted can fail once with
        "closed by server" (seen under CPU load), and that is not an unreachable store; the
        failed connection is dropped, so the second try opens a fresh one.
        """
        try:
            async with guarded("PING", self.timeout):
                try:
                    return bool(await self.client.ping())
                except RedisConnectionError:
                    return bool(await self.client.ping())
        except StoreUnavailable:
            return False


class RedisStore(RedisClientOps):
    """Redis via aiocache for plain GET/MGET/SET; a redis-py client beside it for pipelines and scans."""

    client: aioredis.Redis

    def __init__(self, url: str, timeout: float) -> None:
        self.timeout = timeout
        self.cache = RedisCache(
            serializer=NullSerializer(encoding=None),  # bytes in, bytes out
            timeout=None,  # bounded below with asyncio.timeout, uniformly for both clients
            create_connection_timeout=timeout,
            # Image blobs are ~1.5 MB: reading them in 1 MiB steps instead of redis-py's 64 KiB
            # default saves most of the parser's loop iterations on every image hit.
            connection_pool_kwargs={"socket_read_size": 1 << 20, "retry": _one_retry()},
            **redis_cache_kwargs(url),
        )
        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=timeout)

    async def get(self, key: str) -> bytes | None:
        async with guarded("GET", self.timeout):
            value: bytes | None = await self.cache.get(key)
            return value

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        async with guarded("MGET", self.timeout):
            values: list[bytes | None] = await self.cache.multi_get(list(keys))
            return values

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        async with guarded("SET", self.timeout * 4):
            await self.cache.set(key, value, ttl=ttl)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: int) -> None:
        """Every value in one round trip: aiocache sends ``MULTI``, ``MSET``, one ``EXPIRE`` per key,
        ``EXEC`` (the batch is never seen without its expiries)."""
        if not items:
            return
        async with guarded("MSET", self.timeout * 4):
            await self.cache.multi_set(list(items), ttl=ttl)

    async def close(self) -> None:
        # aiocache's close() calls redis-py's deprecated Redis.close(); close its client directly.
        await self.cache.client.aclose()
        await self.client.aclose()
