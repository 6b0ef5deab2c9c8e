"""Traffic in 5-minute buckets, from the proxy's own state: the console's overview (issue 14).

Hit ratio, requests, USD spent and saved, per model and per key, for the last hour and day,
without Prometheus. The accountant calls ``spent``/``saved`` on every priced call and hit: that
only adds to in-process counters (no I/O on the request path). ``flush`` (a background task of the
console, every few seconds, and before every read) adds them to the store:

- Redis: one hash per bucket, ``{p}:stats:{bucket start, unix seconds}``, ``HINCRBY`` per field
  and a TTL of 26 hours; replicas add to the same hashes, so a read sums every replica.
- in memory: the same buckets in this process (the in-memory store is one process's anyway).

Fields: ``h``/``m`` (hits, upstream calls), ``s``/``v`` (micro-USD spent, saved), and per model
and key ``mh:``, ``mm:``, ``ms:``, ``mv:``, ``kh:``... followed by the metric label (bounded and
sanitised by ``ProxyMetrics``, so a client-chosen name can neither grow the hash nor break a key).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.storage.base import StoreUnavailable, guarded

log = logging.getLogger(__name__)

BUCKET_S = 300
KEEP_S = 26 * 3600  # a day of buckets, plus slack for a read that spans midnight or a slow clock
_PENDING_BUCKETS = 64  # kept while the store is away (a little over 5 hours)
_MAX_FIELDS = 4096  # per bucket and process: labels are bounded already, this bounds the sum


class BucketStore(Protocol):
    async def add(self, buckets: dict[int, Counter[str]]) -> None: ...
    async def read(self, starts: list[int]) -> list[dict[str, int]]: ...


class MemoryBuckets:
    """Buckets in this process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._buckets: dict[int, Counter[str]] = defaultdict(Counter)

    async def add(self, buckets: dict[int, Counter[str]]) -> None:
        for start, counts in buckets.items():
            self._buckets[start].update(counts)
        oldest = self.clock() - KEEP_S
        for start in [s for s in self._buckets if s < oldest]:
            del self._buckets[start]

    async def read(self, starts: list[int]) -> list[dict[str, int]]:
        return [dict(self._buckets.get(start, {})) for start in starts]


class RedisBuckets:
    """Buckets in Redis, one hash each (every replica adds to the same hash)."""

    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str, timeout: float) -> None:
        self.client = client
        self.prefix = f"{prefix}:stats:"
        self.timeout = timeout

    async def add(self, buckets: dict[int, Counter[str]]) -> None:
        if not buckets:
            return
        async with guarded("stats add", self.timeout), self.client.pipeline(transaction=False) as pipe:
            for start, counts in buckets.items():
                key = f"{self.prefix}{start}"
                for name, value in counts.items():
                    pipe.hincrby(key, name, value)
                pipe.expire(key, KEEP_S)
            await pipe.execute()

    async def read(self, starts: list[int]) -> list[dict[str, int]]:
        async with guarded("stats read", self.timeout), self.client.pipeline(transaction=False) as pipe:
            for start in starts:
                pipe.hgetall(f"{self.prefix}{start}")
            hashes = await pipe.execute()
        return [{k.decode(): int(v) for k, v in fields.items()} for fields in hashes]


@dataclass(slots=True)
class Part:
    """Totals of one model or key (or of everything) over a window."""

    hits: int = 0
    misses: int = 0
    spent_micro: int = 0
    saved_micro: int = 0

    def to_json(self) -> dict[str, Any]:
        requests = self.hits + self.misses
        return {
            "requests": requests,
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hits / requests if requests else None,
            "spent_usd": self.spent_micro / 1_000_000,
            "saved_usd": self.saved_micro / 1_000_000,
        }


@dataclass(slots=True)
class Window:
    """What the overview shows for one window."""

    seconds: int
    total: Part = field(default_factory=Part)
    models: dict[str, Part] = field(default_factory=lambda: defaultdict(Part))
    keys: dict[str, Part] = field(default_factory=lambda: defaultdict(Part))

    def add(self, fields: dict[str, int]) -> None:
        for name, value in fields.items():
            kind, _, label = name.partition(":")
            if not label:
                _apply(self.total, kind, value)
            elif kind[:1] == "m":
                _apply(self.models[label], kind[1:], value)
            elif kind[:1] == "k":
                _apply(self.keys[label], kind[1:], value)

    def to_json(self, top: int = 5) -> dict[str, Any]:
        def ranked(parts: dict[str, Part]) -> list[dict[str, Any]]:
            order = sorted(parts.items(), key=lambda kv: (-(kv[1].spent_micro + kv[1].saved_micro), kv[0]))
            return [{"name": name, **part.to_json()} for name, part in order[:top]]

        return {
            "seconds": self.seconds,
            **self.total.to_json(),
            "top_models": ranked(self.models),
            "top_keys": ranked(self.keys),
        }


def _apply(part: Part, kind: str, value: int) -> None:
    if kind == "h":
        part.hits += value
    elif kind == "m":
        part.misses += value
    elif kind == "s":
        part.spent_micro += value
    elif kind == "v":
        part.saved_micro += value


class TrafficStats:
    """Counts hits, upstream calls, spend and savings per 5-minute bucket; written out by ``flush``."""

    def __init__(self, store: BucketStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._pending: dict[int, Counter[str]] = defaultdict(Counter)

    def _count(self, kind: str, value_kind: str, model: str, key: str, micro: int) -> None:
        start = int(self.clock()) // BUCKET_S * BUCKET_S
        counts = self._pending[start]
        if len(counts) >= _MAX_FIELDS:
            model, key = "other", "other"
        counts[kind] += 1
        counts[value_kind] += micro
        counts[f"m{kind}:{model}"] += 1
        counts[f"m{value_kind}:{model}"] += micro
        counts[f"k{kind}:{key}"] += 1
        counts[f"k{value_kind}:{key}"] += micro

    def spent(self, model: str, key: str, micro: int) -> None:
        """An upstream call (labels as in the metrics): request, miss, spend."""
        self._count("m", "s", model, key, micro)

    def saved(self, model: str, key: str, micro: int) -> None:
        """A cache hit: request, hit, what it saved."""
        self._count("h", "v", model, key, micro)

    async def flush(self) -> None:
        """Add the pending counts to the store (kept for the next flush if it is away)."""
        pending, self._pending = self._pending, defaultdict(Counter)
        if not pending:
            return
        try:
            await self.store.add(pending)
        except StoreUnavailable as exc:
            log.warning("traffic stats not written (kept for the next flush): %s", exc)
            for start in sorted(pending)[-_PENDING_BUCKETS:]:
                self._pending[start].update(pending[start])

    async def window(self, seconds: int) -> Window:
        """Totals over the last ``seconds`` (whole buckets: up to 5 minutes more)."""
        await self.flush()
        now = int(self.clock())
        last = now // BUCKET_S * BUCKET_S
        starts = list(range(last - (seconds // BUCKET_S - 1) * BUCKET_S, last + 1, BUCKET_S))
        window = Window(seconds)
        for fields in await self.store.read(starts):
            window.add(fields)
        return window
