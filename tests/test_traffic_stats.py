"""The console's traffic counters (``obs.stats``): 5-minute buckets, windows of an hour and a day,
totals per model and key, the same on the in-memory store and on Redis (replicas add up)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from proxy.obs.stats import BUCKET_S, BucketStore, MemoryBuckets, RedisBuckets, TrafficStats

START = 1_800_000_000 // BUCKET_S * BUCKET_S


def _buckets(backend: str, client: aioredis.Redis, prefix: str, clock: list[float]) -> BucketStore:
    return RedisBuckets(client, prefix, 2.0) if backend == "redis" else MemoryBuckets(lambda: clock[0])


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_hour_and_day_windows_count_what_happened_in_them(
    redis_client: aioredis.Redis, key_prefix: str, backend: str
) -> None:
    """A miss 3 hours ago, then a miss and two hits in the last hour: the hour shows 3 requests,
    hit ratio 2/3, spend and savings; the day shows all 4; models and keys ranked by money."""
    clock = [float(START)]
    stats = TrafficStats(_buckets(backend, redis_client, key_prefix, clock), clock=lambda: clock[0])
    stats.spent("gpt-image-1", "team-a", 40_000)
    await stats.flush()
    clock[0] += 3 * 3600
    stats.spent("gpt-4o-mini", "team-b", 1_000)
    clock[0] += 600
    stats.saved("gpt-image-1", "team-a", 40_000)
    stats.saved("gpt-image-1", "team-a", 40_000)
    hour = (await stats.window(3600)).to_json()
    day = (await stats.window(86400)).to_json()
    assert (hour["requests"], hour["hits"], hour["misses"]) == (3, 2, 1)
    assert hour["hit_ratio"] == pytest.approx(2 / 3)
    assert (hour["spent_usd"], hour["saved_usd"]) == (0.001, 0.08)
    assert [m["name"] for m in hour["top_models"]] == ["gpt-image-1", "gpt-4o-mini"]
    assert hour["top_keys"][0] == {
        "name": "team-a",
        "requests": 2,
        "hits": 2,
        "misses": 0,
        "hit_ratio": 1.0,
        "spent_usd": 0.0,
        "saved_usd": 0.08,
    }
    assert (day["requests"], day["spent_usd"]) == (4, 0.041)


async def test_two_replicas_add_to_the_same_redis_buckets(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Two processes' counters flushed to one Redis are summed by either's read; buckets expire in 26 h."""
    clock = [float(START)]
    one = TrafficStats(RedisBuckets(redis_client, key_prefix, 2.0), clock=lambda: clock[0])
    two = TrafficStats(RedisBuckets(redis_client, key_prefix, 2.0), clock=lambda: clock[0])
    one.saved("m", "k", 5)
    two.saved("m", "k", 7)
    await one.flush()
    await two.flush()
    window = (await one.window(3600)).to_json()
    ttl = await redis_client.ttl(f"{key_prefix}:stats:{START}")
    assert (window["hits"], window["saved_usd"]) == (2, 0.000012)
    assert 26 * 3600 - 5 <= ttl <= 26 * 3600
