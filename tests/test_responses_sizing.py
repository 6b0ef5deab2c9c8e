"""Redis memory per ``image_generation_call`` cached from ``/v1/responses``, measured on a private
redis-server: ``used_memory`` grows by about the PNG's size per cached answer (the ``result`` is a
blob of raw bytes), not by the 1.33x of its base64 text."""

from __future__ import annotations

import base64

import pytest
import redis.asyncio as aioredis

from tests.e2e_helpers import RawReply
from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.redis_process import RedisProcess
from tests.responses_helpers import IMAGE_TOOL, MODEL, respond_raw
from tests.test_redis_sizing import IMAGE_OVERHEAD, client, private_redis, used_memory

__all__ = ["client", "private_redis"]  # the fixtures, shared with the chat sizing test

pytestmark = pytest.mark.timeout(120)

ANSWERS = 12
FACTOR = 1.05  # DESIGN.md: Redis bytes per cached image <= 1.05x PNG


async def cache_answers(upstream: FakeUpstream, redis_url: str, tag: str, count: int) -> list[RawReply]:
    """``count`` distinct image answers through a fresh proxy, each a MISS then a HIT (so stored)."""
    replies = []
    async with ProxyServer(proxy_settings(upstream.url, redis_url, "size", hot_cache_bytes=0)) as proxy:
        for index in range(count):
            body = {"model": MODEL, "input": f"sizing {tag} {index}", "tools": [IMAGE_TOOL]}
            miss = await respond_raw(proxy, body)
            assert miss.headers["X-Cache"] == "MISS"
            assert (await respond_raw(proxy, body)).headers["X-Cache"] == "HIT"
            replies.append(miss)
    return replies


async def test_a_responses_image_answer_costs_its_png_size_in_redis(
    fake_upstream: FakeUpstream, private_redis: RedisProcess, client: aioredis.Redis
) -> None:
    """Twelve cached answers with a 1.5 MB image each: each adds at most 1.05x its PNG (+ a 2 KiB
    entry) to ``used_memory``, and at least the PNG (it is really stored)."""
    fake_upstream.state.image_bytes = 1_500_000
    await cache_answers(fake_upstream, private_redis.url, "warm-up", 3)  # scripts, pools: fixed costs
    before = await used_memory(client)
    replies = await cache_answers(fake_upstream, private_redis.url, "measured", ANSWERS)
    per_answer = (await used_memory(client) - before) / ANSWERS
    png = sum(len(base64.b64decode(r.json()["output"][0]["result"])) for r in replies) / ANSWERS
    ratio = per_answer / png
    print(
        f"\nper cached Responses image answer: {per_answer:,.0f} B of Redis memory,"
        f" PNG {png:,.0f} B ({ratio:.4f}x)"
    )
    assert png <= per_answer <= FACTOR * png + IMAGE_OVERHEAD
