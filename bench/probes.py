"""Scenarios that are not throughput: miss latency, single flight, Redis memory per image."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable

import aiohttp
import pybase64
import redis.asyncio as aioredis

from bench.context import Options, Reply, Target, UpstreamControl, post
from bench.loadgen import percentile
from bench.payloads import (
    IMAGE_MODEL,
    IMAGES_PATH,
    TEXT_MODEL,
    b64_of,
    chat_body,
    image_url_of,
    images_body,
    png_size,
)
from bench.results import CoalesceResult, MissLatencyResult, RedisMemoryResult

_MISS_WARMUP = 10
_COALESCE_REQUESTS = 32
_SETTLE_S = 0.2  # let the leader release its flight lock before keys are listed
_COALESCE_UPSTREAM_S = 0.5  # long enough that all 32 requests arrive while the first is upstream


async def miss_latency(
    target: Target,
    direct: Target,
    opts: Options,
    upstream: UpstreamControl,
    forward: Target | None = None,
) -> MissLatencyResult:
    """Sequential unique text misses, proxy, direct and (given) bare-forward interleaved, the
    order rotating every round so no side always goes first."""
    await upstream.configure(latency_s=0.0, image_latency_s=0.0)
    sides = {"proxy": target, "direct": direct, **({"forward": forward} if forward is not None else {})}
    times: dict[str, list[float]] = {name: [] for name in sides}
    problems: set[str] = set()
    tag = f"{opts.run_id} {target.label}"
    names = list(sides)
    async with aiohttp.ClientSession() as session:
        for i in range(-_MISS_WARMUP, opts.miss_samples):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                reply = await post(
                    session, sides[name].chat_url, chat_body(TEXT_MODEL, f"miss {tag} {name}{i}")
                )
                if reply.status != 200:
                    problems.add(f"status {name} {reply.status}")
                if name == "proxy" and reply.x_cache != "MISS":
                    problems.add(f"expected X-Cache MISS, got {reply.x_cache!r}")
                if i >= 0:
                    times[name].append(reply.seconds * 1000)
    proxy_ms, direct_ms = times["proxy"], times["direct"]
    pairs = [p - d for p, d in zip(proxy_ms, direct_ms, strict=True)]
    proxy_sorted, direct_sorted = sorted(proxy_ms), sorted(direct_ms)
    forward_ms = sorted(times.get("forward", []))
    return MissLatencyResult(
        target=target.label,
        samples=len(proxy_ms),
        proxy_p50_ms=percentile(proxy_sorted, 50),
        proxy_p99_ms=percentile(proxy_sorted, 99),
        direct_p50_ms=percentile(direct_sorted, 50),
        direct_p99_ms=percentile(direct_sorted, 99),
        paired_median_added_ms=statistics.median(pairs) if pairs else 0.0,
        problems=tuple(sorted(problems)),
        forward_p50_ms=percentile(forward_ms, 50) if forward_ms else None,
    )


async def coalesce(target: Target, opts: Options, upstream: UpstreamControl) -> CoalesceResult:
    """32 identical image misses at once, each on its own connection; count upstream calls."""
    # Single flight is per process with the memory store, across processes only through Redis.
    expected = 1 if target.store == "redis" else target.workers
    body = chat_body(IMAGE_MODEL, f"coalesce {opts.run_id} {target.label}")
    await upstream.configure(image_latency_s=_COALESCE_UPSTREAM_S)
    try:
        before = await upstream.chat_calls()
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            started = time.perf_counter()
            replies = await asyncio.gather(
                *(post(session, target.chat_url, body) for _ in range(_COALESCE_REQUESTS))
            )
            elapsed = time.perf_counter() - started
        calls = await upstream.chat_calls() - before
    finally:
        await upstream.configure(image_latency_s=0.0)
    problems: list[str] = []
    statuses = Counter(r.status for r in replies)
    if set(statuses) != {200}:
        problems.append(f"statuses {dict(statuses)}")
    if len({image_url_of(r.body) for r in replies if r.status == 200}) != 1:
        problems.append("replies carry different images")
    if calls > expected:
        problems.append(f"{calls} upstream calls, expected {expected}")
    return CoalesceResult(
        target=target.label,
        requests=len(replies),
        upstream_calls=calls,
        expected_calls=expected,
        x_cache=dict(Counter(r.x_cache or "-" for r in replies)),
        elapsed_ms=elapsed * 1000,
        problems=tuple(problems),
    )


async def prefixed_keys(client: aioredis.Redis, prefix: str) -> set[str]:
    """Every key of one bench run's proxy (its ``PROXY_REDIS_PREFIX``)."""
    return {k.decode() async for k in client.scan_iter(match=f"{prefix}*", count=1000)}


async def delete_prefixed(client: aioredis.Redis, prefix: str) -> int:
    """Remove a run's keys afterwards."""
    keys = list(await prefixed_keys(client, prefix))
    for start in range(0, len(keys), 1000):
        await client.unlink(*keys[start : start + 1000])
    return len(keys)


async def redis_memory(
    target: Target, opts: Options, session: aiohttp.ClientSession, client: aioredis.Redis, prefix: str
) -> RedisMemoryResult:
    """One chat image miss; ``MEMORY USAGE`` of every key it created (entry + blob) vs the PNG size."""
    body = chat_body(IMAGE_MODEL, f"redis memory {opts.run_id}")
    return await _memory_of_one_miss(target, session, target.chat_url, body, _chat_png, client, prefix)


async def images_redis_memory(
    target: Target, opts: Options, session: aiohttp.ClientSession, client: aioredis.Redis, prefix: str
) -> RedisMemoryResult:
    """The same for one ``/v1/images/generations`` miss (a ``b64_json`` PNG, stored as a blob)."""
    body = images_body(f"redis memory {opts.run_id}")
    url = target.base + IMAGES_PATH
    return await _memory_of_one_miss(target, session, url, body, _images_api_png, client, prefix)


def _chat_png(reply: Reply) -> int:
    return png_size(image_url_of(reply.body))


def _images_api_png(reply: Reply) -> int:
    return len(pybase64.b64decode(b64_of(reply.body)))


async def _memory_of_one_miss(
    target: Target,
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    png_bytes: Callable[[Reply], int],
    client: aioredis.Redis,
    prefix: str,
) -> RedisMemoryResult:
    before = await prefixed_keys(client, prefix)
    reply = await post(session, url, body)
    problems: list[str] = []
    if reply.status != 200 or reply.x_cache != "MISS":
        problems.append(f"image miss answered {reply.status} X-Cache {reply.x_cache!r}")
    png = png_bytes(reply) if reply.status == 200 else 0
    await asyncio.sleep(_SETTLE_S)
    created = sorted((await prefixed_keys(client, prefix)) - before)
    usage: dict[str, int] = {}
    for key in created:
        size = await client.memory_usage(key, samples=0)
        if size is not None:  # None: gone meanwhile (a flight lock released after the reply)
            usage[key.removeprefix(prefix)] = int(size)
    if not usage:
        problems.append("the miss created no Redis keys")
    route = url.removeprefix(target.base)
    return RedisMemoryResult(
        target=target.label, keys=usage, png_bytes=png, problems=tuple(problems), route=route
    )
