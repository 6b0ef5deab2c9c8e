"""Redis memory per image cached from ``/v1/images/generations``, measured on a private redis-server:
``used_memory`` (what maxmemory counts) grows by about the PNG's size per cached image, not by
the 1.33x of its base64 text."""

from __future__ import annotations

import base64

import pytest
import redis.asyncio as aioredis

from tests.e2e_helpers import RawReply
from tests.fake_upstream import FakeUpstream
from tests.images_helpers import GPT_IMAGE, generate_raw
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.redis_process import RedisProcess
from tests.test_redis_sizing import IMAGE_OVERHEAD, client, private_redis, used_memory

__all__ = ["client", "private_redis"]  # the fixtures, shared with the chat sizing test

pytestmark = pytest.mark.timeout(120)

IMAGES = 12
FACTOR = 1.05  # DESIGN.md: Redis bytes per cached image <= 1.05x PNG


async def cache_images(upstream: FakeUpstream, redis_url: str, tag: str, count: int) -> list[RawReply]:
    """``count`` distinct generations through a fresh proxy, each a MISS then a HIT (so stored)."""
    replies = []
    async with ProxyServer(proxy_settings(upstream.url, redis_url, "size", hot_cache_bytes=0)) as proxy:
        for index in range(count):
            body = {"model": GPT_IMAGE, "prompt": f"sizing {tag} {index}"}
            miss = await generate_raw(proxy, body)
            assert miss.headers["X-Cache"] == "MISS"
            assert (await generate_raw(proxy, body)).headers["X-Cache"] == "HIT"
            replies.append(miss)
    return replies


async def test_an_images_api_answer_costs_its_png_size_in_redis(
    fake_upstream: FakeUpstream, private_redis: RedisProcess, client: aioredis.Redis
) -> None:
    """Twelve cached 1.5 MB generations: each adds at most 1.05x its PNG (+ a 2 KiB entry) to
    ``used_memory``, and at least the PNG (it is really stored)."""
    fake_upstream.state.image_bytes = 1_500_000
    await cache_images(fake_upstream, private_redis.url, "warm-up", 3)  # scripts, pools: fixed costs
    before = await used_memory(client)
    replies = await cache_images(fake_upstream, private_redis.url, "measured", IMAGES)
    per_image = (await used_memory(client) - before) / IMAGES
    png = sum(len(base64.b64decode(r.json()["data"][0]["b64_json"])) for r in replies) / IMAGES
    ratio = per_image / png
    print(
        f"\nper cached Images API answer: {per_image:,.0f} B of Redis memory, PNG {png:,.0f} B ({ratio:.4f}x)"
    )
    assert png <= per_image <= FACTOR * png + IMAGE_OVERHEAD
