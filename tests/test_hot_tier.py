"""The in-process hot tier: fast hits that stay correct across replicas (purge, refresh, expiry)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import aiohttp

from proxy.cache.entry import CachedEntry, EntryMeta
from proxy.cache.hot import HotItem, HotTier
from proxy.state import CACHE
from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer, proxy_settings

BODY = {"model": "gemini-2.5-flash-image-preview", "messages": [{"role": "user", "content": "hot"}]}
AUTH = {"Authorization": "Bearer sk-hot"}


async def _post(url: str, headers: dict[str, str] | None = None) -> tuple[str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/chat/completions", json=BODY, headers={**AUTH, **(headers or {})}) as resp,
    ):
        assert resp.status == 200
        return resp.headers["X-Cache"], await resp.read()


def _item(size: int, expires: float = float("inf")) -> HotItem:
    meta = EntryMeta(created=0.0, model="m", prompt_tokens=0, completion_tokens=0, images=0, blobs=())
    entry = CachedEntry("k", meta, memoryview(b"{}"), ())
    return HotItem(b"r", entry, size, expires, 0.0)


def test_hot_tier_is_byte_bounded_and_evicts_least_recently_used() -> None:
    """Over the byte bound the least recently used item goes; a recently read one stays."""
    tier = HotTier(max_bytes=400)
    tier.put("a", _item(100))
    tier.put("b", _item(100))
    tier.put("c", _item(100))
    assert tier.get("a", now=1.0) is not None  # a is now most recent
    tier.put("d", _item(100))
    tier.put("e", _item(100))
    assert tier.get("b", now=1.0) is None
    assert tier.get("a", now=1.0) is not None
    assert tier.used_bytes <= 400


def test_hot_tier_never_returns_an_expired_item() -> None:
    """An item past its expiry time is dropped, not served."""
    tier = HotTier(max_bytes=1000)
    tier.put("a", _item(10, expires=5.0))
    assert tier.get("a", now=4.9) is not None
    assert tier.get("a", now=5.0) is None
    assert len(tier) == 0


def test_hot_tier_refuses_an_item_larger_than_a_quarter_of_its_bound() -> None:
    """One huge response must not flush the whole tier."""
    tier = HotTier(max_bytes=1000)
    tier.put("small", _item(100))
    tier.put("huge", _item(600))
    assert tier.get("huge", now=0.0) is None
    assert tier.get("small", now=0.0) is not None


async def test_purge_on_one_replica_is_seen_by_another_within_one_second(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: object
) -> None:
    """Replica B serves from its hot tier; after a purge on replica A, B misses within 1 s."""
    fake_upstream.state.image_bytes = 300_000
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix)
    async with ProxyServer(settings) as first, ProxyServer(dataclasses.replace(settings, port=0)) as second:
        assert (await _post(first.url))[0] == "MISS"
        assert (await _post(second.url))[0] == "HIT"
        assert (await _post(second.url))[0] == "HIT"  # now hot in B
        purged = await first.app[CACHE].purge_all()
        assert purged == 1
        started = time.monotonic()
        while (await _post(second.url))[0] == "HIT":
            assert time.monotonic() - started < 1.2, "replica B kept serving a purged entry"
            await asyncio.sleep(0.05)
    assert fake_upstream.chat_calls == 2


async def test_refresh_on_one_replica_replaces_the_hot_entry_on_another(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: object
) -> None:
    """A ``no-cache`` refresh on A is what B serves after its next revalidation."""
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix)
    fake_upstream.state.image_bytes = 200_000
    async with ProxyServer(settings) as first, ProxyServer(dataclasses.replace(settings, port=0)) as second:
        await _post(first.url)
        _, old = await _post(second.url)
        refreshed = await _post(first.url, {"Cache-Control": "no-cache"})
        await asyncio.sleep(1.05)
        cache, body = await _post(second.url)
        assert cache == "HIT"
        assert body == refreshed[1]
        assert body != old  # the simulator numbers its responses, so a refresh differs


async def test_expired_entries_are_never_served_from_the_hot_tier(
    fake_upstream: FakeUpstream, proxy: ProxyServer
) -> None:
    """``X-Cache-TTL: 1``: a hit right away, a miss once the second has passed."""
    fake_upstream.state.image_bytes = 200_000
    assert (await _post(proxy.url, {"X-Cache-TTL": "1"}))[0] == "MISS"
    assert (await _post(proxy.url))[0] == "HIT"
    await asyncio.sleep(1.1)
    assert (await _post(proxy.url))[0] == "MISS"


async def test_hot_tier_off_serves_every_hit_from_the_store(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: object
) -> None:
    """``PROXY_HOT_CACHE_BYTES=0`` still hits (from Redis), with identical bytes."""
    fake_upstream.state.image_bytes = 200_000
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, hot_cache_bytes=0)
    async with ProxyServer(settings) as proxy:
        assert proxy.app[CACHE].hot is None
        cache, first = await _post(proxy.url)
        assert cache == "MISS"
        cache, second = await _post(proxy.url)
        assert cache == "HIT"
        assert first == second
