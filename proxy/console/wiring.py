"""The console's state, opened by the app factory's ``cleanup_ctx`` when the console is on.

The image index is plugged into the response cache, the traffic stats into the accountant; both
only count in process on the request path. A background task writes them out every
``FLUSH_S`` seconds (and once more at shutdown, bounded), so a hit never waits for Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.cache.entry import EntryMeta
from proxy.cache.index import ImageIndex, MemoryRows, RedisRows, Rows
from proxy.console.sessions import LoginLimiter, MemorySessions, RedisSessions, SessionStore
from proxy.obs.stats import BucketStore, MemoryBuckets, RedisBuckets, TrafficStats
from proxy.obs.usage import Usage
from proxy.state import (
    ACCOUNTANT,
    CACHE,
    CONSOLE_SESSIONS,
    IMAGE_INDEX,
    LOGIN_LIMITER,
    REDIS,
    SETTINGS,
    STORE,
    TRAFFIC_STATS,
)
from proxy.storage.base import StoreUnavailable

log = logging.getLogger(__name__)

FLUSH_S = 2.0


async def console_ctx(app: web.Application) -> AsyncIterator[None]:
    """Index, stats and sessions (in Redis when the cache is there, else in this process)."""
    settings = app[SETTINGS]
    if settings.admin_token is None:
        yield
        return
    client = app.get(REDIS)
    timeout = settings.redis_op_timeout
    prefix = settings.redis_prefix
    rows: Rows = RedisRows(client, prefix, timeout) if client is not None else MemoryRows()
    buckets: BucketStore = RedisBuckets(client, prefix, timeout) if client is not None else MemoryBuckets()
    sessions: SessionStore = (
        RedisSessions(client, prefix, timeout) if client is not None else MemorySessions()
    )
    accountant = app[ACCOUNTANT]

    def price(model: str, meta: EntryMeta) -> int:
        usage = Usage(
            meta.prompt_tokens,
            meta.completion_tokens,
            meta.images,
            image_prompt_tokens=meta.image_prompt_tokens,
        )
        return accountant.entry_cost(model, usage)

    index = ImageIndex(rows, app[STORE], prefix, price)
    stats = TrafficStats(buckets)
    app[IMAGE_INDEX] = index
    app[TRAFFIC_STATS] = stats
    app[CONSOLE_SESSIONS] = sessions
    app[LOGIN_LIMITER] = LoginLimiter()
    app[CACHE].index = index
    accountant.stats = stats
    task = asyncio.create_task(_flushing(index, stats), name="console-flush")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    app[CACHE].index = None
    accountant.stats = None
    with contextlib.suppress(TimeoutError, StoreUnavailable):
        async with asyncio.timeout(max(timeout * 2, 1.0)):
            await index.flush()
            await stats.flush()


async def _flushing(index: ImageIndex, stats: TrafficStats) -> None:
    while True:
        await asyncio.sleep(FLUSH_S)
        try:
            await index.flush()
            await stats.flush()
        except Exception:  # a bug here must not end the loop: the next flush tries again
            log.exception("console flush failed")
