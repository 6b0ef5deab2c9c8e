"""Redis memory per image cached from the Images API (``/v1/images/generations``) and from the
Responses API (an ``image_generation_call`` in ``/v1/responses``), measured on a private
redis-server: ``used_memory`` (what maxmemory counts) grows by about the PNG's size per cached
answer (the image is a blob of raw bytes), not by the 1.33x of its base64 text."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.e2e_helpers import RawReply
from tests.fake_upstream import FakeUpstream
from tests.images_helpers import GPT_IMAGE, generate_raw
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.redis_process import RedisProcess
from tests.responses_helpers import IMAGE_TOOL, MODEL, respond_raw
from tests.test_redis_sizing import IMAGE_OVERHEAD, client, private_redis, used_memory

__all__ = ["client", "private_redis"]  # the fixtures, shared with the chat sizing test

pytestmark = pytest.mark.timeout(120)

ANSWERS = 12
FACTOR = 1.05  # DESIGN.md: Redis bytes per cached image <= 1.05x PNG


@dataclass(frozen=True)
class ImageApi:
    """How one API is asked for a distinct image, and where its answer carries the base64 PNG."""

    name: str
    send: Callable[[ProxyServer, dict[str, Any]], Awaitable[RawReply]]
    body: Callable[[str], dict[str, Any]]
    b64: Callable[[Any], str]


APIS = [
    ImageApi(
        "Images API",
        generate_raw,
        lambda prompt: {"model": GPT_IMAGE, "prompt": prompt},
        lambda answer: answer["data"][0]["b64_json"],
    ),
    ImageApi(
        "Responses image",
        respond_raw,
        lambda prompt: {"model": MODEL, "input": prompt, "tools": [IMAGE_TOOL]},
        lambda answer: answer["output"][0]["result"],
    ),
]


async def cache_answers(
    api: ImageApi, upstream: FakeUpstream, redis_url: str, tag: str, count: int
) -> list[RawReply]:
    """``count`` distinct image answers through a fresh proxy, each a MISS then a HIT (so stored)."""
    replies = []
    async with ProxyServer(proxy_settings(upstream.url, redis_url, "size", hot_cache_bytes=0)) as proxy:
        for index in range(count):
            body = api.body(f"sizing {tag} {index}")
            miss = await api.send(proxy, body)
            assert miss.headers["X-Cache"] == "MISS"
            assert (await api.send(proxy, body)).headers["X-Cache"] == "HIT"
            replies.append(miss)
    return replies


@pytest.mark.parametrize("api", APIS, ids=lambda api: api.name)
async def test_a_cached_image_answer_costs_its_png_size_in_redis(
    api: ImageApi, fake_upstream: FakeUpstream, private_redis: RedisProcess, client: aioredis.Redis
) -> None:
    """Twelve cached answers with a 1.5 MB image each: each adds at most 1.05x its PNG (+ a 2 KiB
    entry) to ``used_memory``, and at least the PNG (it is really stored)."""
    fake_upstream.state.image_bytes = 1_500_000
    await cache_answers(api, fake_upstream, private_redis.url, "warm-up", 3)  # scripts, pools: fixed costs
    before = await used_memory(client)
    replies = await cache_answers(api, fake_upstream, private_redis.url, "measured", ANSWERS)
    per_answer = (await used_memory(client) - before) / ANSWERS
    png = sum(len(base64.b64decode(api.b64(r.json()))) for r in replies) / ANSWERS
    ratio = per_answer / png
    print(
        f"\nper cached {api.name} answer: {per_answer:,.0f} B of Redis memory,"
        f" PNG {png:,.0f} B ({ratio:.4f}x)"
    )
    assert png <= per_answer <= FACTOR * png + IMAGE_OVERHEAD
