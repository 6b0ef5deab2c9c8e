"""The embedded in-memory store: the proxy without Redis, and the byte-bounded LRU under it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proxy.storage.memory import LRUMemoryCache, MemoryStore
from tests.e2e_helpers import IMAGE_MODEL, SMALL_IMAGE, async_client, chat_body, chat_raw, send_raw, user
from tests.fake_upstream import FakeUpstream, png_of
from tests.proxy_harness import ProxyServer, proxy_settings


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def memory_proxy(fake_upstream: FakeUpstream, key_prefix: str) -> AsyncIterator[ProxyServer]:
    """The proxy with no Redis at all (redis_url=None), 1 MB of memory cache and no hot tier."""
    settings = proxy_settings(
        fake_upstream.url, None, key_prefix, memory_cache_bytes=1_000_000, hot_cache_bytes=0
    )
    async with ProxyServer(settings) as server:
        yield server


async def test_memory_store_miss_then_hit(memory_proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """Without Redis, text and image requests miss then hit exactly as with Redis."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    async with async_client(memory_proxy) as client:
        create = client.chat.completions.with_raw_response.create
        for model in ("gpt-4o-mini", IMAGE_MODEL):
            first = await create(model=model, messages=user("an orange kite"))
            second = await create(model=model, messages=user("an orange kite"))
            assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
            assert second.content == first.content
    assert fake_upstream.chat_calls == 2
    ready = await send_raw(f"{memory_proxy.base}/readyz", None, method="GET")
    assert ready.status == 200


async def test_memory_store_stream_hit(memory_proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """Without Redis, a stored image is replayed as a stream with the same PNG."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    miss = await chat_raw(memory_proxy, chat_body("a glass bridge", IMAGE_MODEL))
    hit = await chat_raw(memory_proxy, chat_body("a glass bridge", IMAGE_MODEL, stream=True))
    assert hit.headers["X-Cache"] == "HIT"
    url = miss.json()["choices"][0]["message"]["images"][0]["image_url"]["url"]
    assert len(png_of(url)) > 200_000
    assert url.encode() in hit.body
    assert fake_upstream.chat_calls == 1


async def test_memory_store_evicts_least_recently_used(
    memory_proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """Over memory_cache_bytes the least recently used entry goes; recent ones still hit."""
    fake_upstream.state.image_bytes = SMALL_IMAGE  # ~300 KB each: four do not fit in 1 MB
    prompts = [f"picture number {i}" for i in range(4)]
    for prompt in prompts:
        assert (await chat_raw(memory_proxy, chat_body(prompt, IMAGE_MODEL))).headers["X-Cache"] == "MISS"
    assert fake_upstream.chat_calls == 4
    for prompt in prompts[1:]:  # the three most recent survive
        assert (await chat_raw(memory_proxy, chat_body(prompt, IMAGE_MODEL))).headers["X-Cache"] == "HIT"
    assert fake_upstream.chat_calls == 4
    evicted = await chat_raw(memory_proxy, chat_body(prompts[0], IMAGE_MODEL))
    assert evicted.status == 200
    assert evicted.headers["X-Cache"] == "MISS"
    assert fake_upstream.chat_calls == 5


async def test_lru_holds_at_most_max_bytes() -> None:
    """The byte bound holds after every write; values over the bound are refused outright."""
    cache = LRUMemoryCache(max_bytes=1000, timeout=None)
    for i in range(50):
        await cache.set(f"k{i}", bytes(97 + i % 13), ttl=None)
        assert cache.used_bytes <= 1000
        assert cache.used_bytes == sum(
            len(v) for v in await cache.multi_get([f"k{j}" for j in range(i + 1)]) if v
        )
    assert await cache.set("huge", bytes(1001)) is False
    assert await cache.get("huge") is None
    await cache.set("k49", b"x")  # overwriting re-counts the size
    assert await cache.get("k49") == b"x"
    assert cache.used_bytes <= 1000


async def test_lru_evicts_in_least_recently_used_order() -> None:
    """Reads refresh recency: the entry not touched for longest is evicted first."""
    cache = LRUMemoryCache(max_bytes=300, timeout=None)
    for key in ("a", "b", "c"):
        await cache.set(key, bytes(100))
    assert await cache.get("a") == bytes(100)  # a is now the most recent
    await cache.set("d", bytes(100))
    assert await cache.get("b") is None
    assert [await cache.exists(k) for k in ("a", "c", "d")] == [True, True, True]  # order now a, c, d
    await cache.set("e", bytes(100))
    assert await cache.get("a") is None
    assert await cache.multi_get(["c", "d", "e"]) == [bytes(100)] * 3


async def test_lru_ttl_expiry_with_an_injected_clock() -> None:
    """Entries expire at their TTL by the injected clock, free their bytes and can be extended."""
    clock = FakeClock()
    cache = LRUMemoryCache(max_bytes=10_000, clock=clock, timeout=None)
    await cache.set("short", b"s" * 10, ttl=5)
    await cache.set("long", b"l" * 10, ttl=60)
    await cache.set("forever", b"f" * 10)
    clock.now += 4.9
    assert await cache.get("short") == b"s" * 10
    assert cache.remaining_ttl("short") == pytest.approx(0.1)
    clock.now += 0.2
    assert await cache.get("short") is None
    assert cache.used_bytes == 20
    assert await cache.expire("long", 100)
    clock.now += 90
    assert await cache.get("long") == b"l" * 10
    clock.now += 20
    assert await cache.multi_get(["long", "forever"]) == [None, b"f" * 10]
    assert cache.remaining_ttl("forever") is None


async def test_lru_delete_and_prefix_listing() -> None:
    """delete frees bytes; keys_with_prefix lists only matching keys (namespace purge)."""
    cache = LRUMemoryCache(max_bytes=10_000, timeout=None)
    for key in ("ns1:a", "ns1:b", "ns2:a"):
        await cache.set(key, b"123")
    assert sorted(cache.keys_with_prefix("ns1:")) == ["ns1:a", "ns1:b"]
    assert await cache.delete("ns1:a") == 1
    assert await cache.delete("ns1:a") == 0
    assert cache.used_bytes == 6


async def test_memory_store_blobs_are_stored_once_and_never_shortened() -> None:
    """put_blob keeps an existing blob (one copy) and only ever extends its TTL."""
    store = MemoryStore(max_bytes=10_000)
    await store.put_blob("blob:x", b"png", ttl=100)
    await store.put_blob("blob:x", b"png", ttl=10)
    remaining = store.cache.remaining_ttl("blob:x")
    assert remaining is not None
    assert remaining > 90
    await store.put_blob("blob:x", b"png", ttl=500)
    remaining = store.cache.remaining_ttl("blob:x")
    assert remaining is not None
    assert remaining > 400
    assert store.cache.used_bytes == 3
    assert await store.mget(["blob:x", "nope"]) == [b"png", None]
    assert await store.ping()
