"""The sizing figures of docs/operations.md, measured on a private redis-server and held to.

Cache: bytes of Redis memory (``INFO memory`` used_memory, i.e. what maxmemory counts) per cached
image and per cached text answer, stored through a real proxy. State: bytes per managed key and
per ledger row (one per settled request). Each test prints what it measured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from proxy.budget.redis import RedisBudgetLedger
from proxy.budget.types import Reservation
from proxy.config import Secret
from tests.e2e_helpers import IMAGE_MODEL, JSON, RawReply, chat_body, chat_raw
from tests.fake_upstream import FakeUpstream, png_of
from tests.managed_helpers import ADMIN_TOKEN, UPSTREAM_KEY, admin
from tests.proxy_harness import ProxyServer, free_port, proxy_settings
from tests.redis_process import RedisProcess

pytestmark = pytest.mark.timeout(120)

IMAGES = 12
TEXTS = 400
LEDGER_ROWS = 2_000
KEYS = 200
# What docs/operations.md states (per entry, on top of the payload), with a margin for the allocator.
IMAGE_FACTOR = 1.01
IMAGE_OVERHEAD = 2_048
TEXT_OVERHEAD = 1_024
LEDGER_ROW_BYTES = 200
KEY_BYTES = 2_048


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    """A redis-server of our own: used_memory moves only with what this test writes."""
    server = RedisProcess(free_port()).start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
async def client(private_redis: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    """A client of the private Redis."""
    redis_client = aioredis.Redis.from_url(private_redis.url)
    try:
        yield redis_client
    finally:
        await redis_client.aclose()


def image_url(reply: RawReply) -> str:
    """The first image's data URL in a chat completion."""
    url: str = reply.json()["choices"][0]["message"]["images"][0]["image_url"]["url"]
    return url


async def used_memory(client: aioredis.Redis) -> int:
    """``used_memory`` of INFO memory: the figure maxmemory is compared with."""
    info = await client.info("memory")
    return int(info["used_memory"])


async def cache_through_proxy(
    upstream: FakeUpstream, redis_url: str, body: Callable[[int], JSON], count: int
) -> list[RawReply]:
    """Send ``count`` distinct requests through a fresh proxy (each a MISS, then a HIT, so it is
    stored), then stop the proxy so its connections and their buffers are gone."""
    settings = proxy_settings(upstream.url, redis_url, "size", hot_cache_bytes=0)
    replies = []
    async with ProxyServer(settings) as proxy:
        for index in range(count):
            miss = await chat_raw(proxy, body(index))
            assert miss.headers["X-Cache"] == "MISS"
            hit = await chat_raw(proxy, body(index))  # the flight ends once the entry is stored
            assert hit.headers["X-Cache"] == "HIT"
            replies.append(miss)
    return replies


async def per_entry_bytes(
    upstream: FakeUpstream,
    redis_url: str,
    client: aioredis.Redis,
    kind: Callable[[str], Callable[[int], JSON]],
    count: int,
) -> tuple[float, list[RawReply]]:
    """Redis memory per cached entry: a first round loads the scripts and pools (fixed costs), the
    difference over the second round is what each entry adds."""
    await cache_through_proxy(upstream, redis_url, kind("warm-up"), 3)
    before = await used_memory(client)
    replies = await cache_through_proxy(upstream, redis_url, kind("measured"), count)
    return (await used_memory(client) - before) / count, replies


def image_request(tag: str) -> Callable[[int], JSON]:
    """Distinct image prompts (distinct PNGs: blobs are shared only by identical images)."""
    return lambda index: chat_body(f"sizing {tag} image {index}", IMAGE_MODEL)


def text_request(tag: str) -> Callable[[int], JSON]:
    """Distinct text prompts."""
    return lambda index: chat_body(f"sizing {tag} text {index}")


@pytest.mark.parametrize("png_bytes", [1_500_000, 700_000])
async def test_cached_image_costs_its_png_size_plus_a_small_entry(
    fake_upstream: FakeUpstream, private_redis: RedisProcess, client: aioredis.Redis, png_bytes: int
) -> None:
    """One cached image response takes about its PNG size of Redis memory (<= 1.01x + 2 KiB at 1.5 MB,
    <= 1.05x at sizes whose last blob chunk rounds up badly, such as 700 KB)."""
    fake_upstream.state.image_bytes = png_bytes
    per_image, replies = await per_entry_bytes(
        fake_upstream, private_redis.url, client, image_request, IMAGES
    )
    png = sum(len(png_of(image_url(reply))) for reply in replies) / len(replies)
    print(
        f"\nper cached image: {per_image:,.0f} B of Redis memory, PNG {png:,.0f} B ({per_image / png:.4f}x)"
    )
    factor = IMAGE_FACTOR if png_bytes == 1_500_000 else 1.05
    assert png <= per_image <= factor * png + IMAGE_OVERHEAD


async def test_cached_text_answer_costs_its_json_plus_under_a_kib(
    fake_upstream: FakeUpstream, private_redis: RedisProcess, client: aioredis.Redis
) -> None:
    """One cached text answer takes its response bytes + < 1 KiB of Redis memory."""
    per_entry, replies = await per_entry_bytes(fake_upstream, private_redis.url, client, text_request, TEXTS)
    body = sum(len(reply.body) for reply in replies) / len(replies)
    print(f"\nper cached text answer: {per_entry:,.0f} B for a {body:,.0f} B response")
    assert per_entry <= body + TEXT_OVERHEAD


async def test_state_redis_bytes_per_key_and_per_ledger_row(
    fake_upstream: FakeUpstream, private_redis: RedisProcess, client: aioredis.Redis
) -> None:
    """A managed key takes < 2 KiB of the state Redis, each ledger row (a settled request) < 200 B."""
    settings = proxy_settings(
        fake_upstream.url,
        private_redis.url,
        "size",
        admin_token=Secret(ADMIN_TOKEN),
        upstream_api_key=Secret(UPSTREAM_KEY),
    )

    async def create_keys(tag: str, count: int) -> None:
        async with ProxyServer(settings) as proxy:
            for index in range(count):
                body = {"alias": f"{tag}-{index:04d}", "budget_usd": 50, "period": "month", "rpm": 600}
                reply = await admin(proxy, "POST", "/keys", body)
                assert reply.status == 201, reply.body

    await create_keys("warm-up", 3)  # loads scripts, builds the id set and hash
    before = await used_memory(client)
    await create_keys("team", KEYS)
    per_key = (await used_memory(client) - before) / KEYS
    ledger = RedisBudgetLedger(client, "size")
    stream = ledger.ledger_key("key_sizing")
    for _ in range(LEDGER_ROWS):
        reservation = await ledger.reserve("key_sizing", None, "month", 40_000, model=IMAGE_MODEL)
        assert isinstance(reservation, Reservation)  # granted, not refused
        await ledger.settle(
            reservation,
            38_700,
            model=IMAGE_MODEL,
            prompt_tokens=12,
            completion_tokens=1290,
            cache_result="miss",
        )
    rows = await client.xlen(stream)
    per_row = int(await client.memory_usage(stream, samples=0)) / rows
    print(f"\nstate Redis: {per_key:,.0f} B per managed key, {per_row:,.0f} B per ledger row ({rows} rows)")
    assert per_key <= KEY_BYTES
    assert per_row <= LEDGER_ROW_BYTES
