"""Per-request cache controls: Cache-Control, X-Cache-TTL, X-Cache-Namespace; Age and X-Cache-Key."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import pytest
import redis.asyncio as aioredis

from proxy.cache.controls import MAX_CACHE_TTL, CacheControls
from tests.e2e_helpers import (
    IMAGE_MODEL,
    SMALL_IMAGE,
    async_client,
    chat_body,
    chat_raw,
    entry_key_of,
    redis_keys,
    send_raw,
    user,
)
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import metric_value, metrics_text
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.slow_link import SlowLink

BODY = chat_body("the northern lights")


async def test_no_cache_bypasses_lookup_and_refreshes_the_entry(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """no-cache skips the lookup (BYPASS, upstream called) and its answer becomes the stored entry."""
    first = await chat_raw(proxy, BODY)
    assert first.headers["X-Cache"] == "MISS"
    refreshed = await chat_raw(proxy, BODY, headers={"Cache-Control": "no-cache"})
    assert refreshed.headers["X-Cache"] == "BYPASS"
    assert fake_upstream.chat_calls == 2
    assert refreshed.json()["id"] != first.json()["id"]  # the simulator numbers its answers
    hit = await chat_raw(proxy, BODY)
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.body == refreshed.body
    assert fake_upstream.chat_calls == 2


async def test_no_store_is_not_stored(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """no-store answers from upstream but leaves nothing behind: the next request is a MISS."""
    first = await chat_raw(proxy, BODY, headers={"Cache-Control": "no-store"})
    assert first.status == 200
    assert first.headers["X-Cache"] == "MISS"
    second = await chat_raw(proxy, BODY)
    assert second.headers["X-Cache"] == "MISS"
    third = await chat_raw(proxy, BODY)
    assert third.headers["X-Cache"] == "HIT"
    assert fake_upstream.chat_calls == 2


async def test_no_store_stream_is_not_stored(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """no-store also holds for streams (nothing assembled into the cache)."""
    stream_body = {**BODY, "stream": True}
    await chat_raw(proxy, stream_body, headers={"Cache-Control": "no-store"})
    second = await chat_raw(proxy, BODY)
    assert second.headers["X-Cache"] == "MISS"
    assert fake_upstream.chat_calls == 2


async def test_max_age_zero_refuses_the_entry(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """max-age=0 accepts no stored entry: the request goes upstream (MISS) and refreshes the entry."""
    await chat_raw(proxy, BODY)
    fresh = await chat_raw(proxy, BODY, headers={"Cache-Control": "max-age=0"})
    assert fresh.headers["X-Cache"] == "MISS"
    assert fake_upstream.chat_calls == 2
    hit = await chat_raw(proxy, BODY, headers={"Cache-Control": "max-age=3600"})
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.body == fresh.body
    assert fake_upstream.chat_calls == 2


async def test_age_header_and_max_age_against_an_older_entry(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """Age counts seconds since storing; max-age=1 refuses an entry older than 1 s, max-age=60 takes it."""
    miss = await chat_raw(proxy, BODY)
    assert "Age" not in miss.headers or miss.headers["Age"] == "0"
    await asyncio.sleep(1.1)
    hit = await chat_raw(proxy, BODY, headers={"Cache-Control": "max-age=60"})
    assert hit.headers["X-Cache"] == "HIT"
    assert int(hit.headers["Age"]) >= 1
    stale = await chat_raw(proxy, BODY, headers={"Cache-Control": "public, max-age=1"})
    assert stale.headers["X-Cache"] == "MISS"
    assert fake_upstream.chat_calls == 2
    renewed = await chat_raw(proxy, BODY)
    assert renewed.headers["X-Cache"] == "HIT"
    assert int(renewed.headers["Age"]) <= 1


async def test_x_cache_ttl_sets_the_redis_ttl(
    proxy: ProxyServer, fake_upstream: FakeUpstream, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """X-Cache-TTL: N stores the entry (and its image blob) with a Redis TTL of about N seconds."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    reply = await chat_raw(proxy, chat_body("a koi pond", IMAGE_MODEL), headers={"X-Cache-TTL": "120"})
    entry = await entry_key_of(redis_client, key_prefix, reply.headers["X-Cache-Key"])
    assert 110 <= await redis_client.ttl(entry) <= 120
    chunks = await redis_keys(redis_client, f"{key_prefix}:blob:*")
    assert chunks
    for chunk in chunks:
        assert await redis_client.ttl(chunk) >= 110


async def test_default_ttl_is_the_configured_one(
    proxy: ProxyServer, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Without X-Cache-TTL the entry lives PROXY_CACHE_TTL seconds."""
    reply = await chat_raw(proxy, BODY)
    entry = await entry_key_of(redis_client, key_prefix, reply.headers["X-Cache-Key"])
    ttl = await redis_client.ttl(entry)
    assert proxy.settings.cache_ttl - 10 <= ttl <= proxy.settings.cache_ttl


async def test_namespace_header_separates_entries(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """Same X-Cache-Namespace hits, another namespace (or none) misses, each with its own key."""
    one = await chat_raw(proxy, BODY, headers={"X-Cache-Namespace": "team-a"})
    again = await chat_raw(proxy, BODY, headers={"X-Cache-Namespace": "team-a"})
    other = await chat_raw(proxy, BODY, headers={"X-Cache-Namespace": "team-b"})
    default = await chat_raw(proxy, BODY)
    results = [r.headers["X-Cache"] for r in (one, again, other, default)]
    assert results == ["MISS", "HIT", "MISS", "MISS"]
    assert one.headers["X-Cache-Key"] == again.headers["X-Cache-Key"]
    assert len({r.headers["X-Cache-Key"] for r in (one, other, default)}) == 3
    assert fake_upstream.chat_calls == 3


async def test_sdk_extra_headers_reach_the_cache_controls(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """The openai SDK's extra_headers carry the controls; X-Cache-Key is equal on miss and hit."""
    async with async_client(proxy) as client:
        create = client.chat.completions.with_raw_response.create
        headers = {"X-Cache-Namespace": "sdk", "X-Cache-TTL": "600"}
        miss = await create(model="gpt-4o-mini", messages=user("a windmill"), extra_headers=headers)
        hit = await create(model="gpt-4o-mini", messages=user("a windmill"), extra_headers=headers)
        bypass = await create(
            model="gpt-4o-mini",
            messages=user("a windmill"),
            extra_headers={**headers, "Cache-Control": "no-cache"},
        )
    assert [r.headers["X-Cache"] for r in (miss, hit, bypass)] == ["MISS", "HIT", "BYPASS"]
    assert miss.headers["X-Cache-Key"] == hit.headers["X-Cache-Key"] == bypass.headers["X-Cache-Key"]
    assert fake_upstream.chat_calls == 2


async def test_cache_headers_are_not_forwarded_upstream(proxy: ProxyServer) -> None:
    """The proxy's own controls stay at the proxy (the upstream never sees them)."""
    headers = {"Cache-Control": "no-store", "X-Cache-TTL": "60", "X-Cache-Namespace": "n"}
    reply = await send_raw(f"{proxy.url}/echo-me", b"{}", headers=headers)  # echoed by the simulator
    echoed: dict[str, str] = reply.json()["headers"]
    assert not {"cache-control", "x-cache-ttl", "x-cache-namespace"} & {k.lower() for k in echoed}
    assert echoed["Authorization"].startswith("Bearer ")


@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "max-age=abc"},
        {"Cache-Control": "max-age=-1"},
        {"Cache-Control": "max-age="},
        {"X-Cache-TTL": "0"},
        {"X-Cache-TTL": "-5"},
        {"X-Cache-TTL": "soon"},
        {"X-Cache-TTL": str(MAX_CACHE_TTL + 1)},
        {"X-Cache-Namespace": ""},
        {"X-Cache-Namespace": "n" * 129},
    ],
    ids=lambda headers: "-".join(f"{k}={v[:12]}" for k, v in headers.items()),
)
async def test_bad_control_values_are_400(
    proxy: ProxyServer, fake_upstream: FakeUpstream, headers: dict[str, str]
) -> None:
    """Malformed cache-control values are a 400 invalid_request_error and nothing is forwarded."""
    reply = await chat_raw(proxy, BODY, headers=headers)
    assert reply.status == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert fake_upstream.chat_calls == 0


def test_cache_control_parsing() -> None:
    """Directives combine, are case-insensitive and tolerate spaces, quotes and unknown directives."""
    controls = CacheControls.from_headers({"Cache-Control": 'No-Cache, no-store , max-age="30", private'})
    assert (controls.lookup, controls.store, controls.max_age) == (False, False, 30)
    assert CacheControls.from_headers({}) == CacheControls()
    assert CacheControls.from_headers({"X-Cache-TTL": " 60 "}).ttl == 60


async def test_max_age_zero_is_not_served_by_a_store_still_in_flight(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A request that joins a flight whose answer was already sent (only its store is pending)
    gets a stored entry, so max-age applies to it too: max-age=0 goes upstream (MISS).

    Redis sits behind a 40 ms link, so the first answer's background store (several round trips)
    is still running when the second request (one round trip to look up) joins the flight.
    """
    port = urlparse(redis_url).port or 6379
    async with SlowLink(port, 0.04) as link:
        settings = proxy_settings(fake_upstream.url, link.url, key_prefix, store_timeout=2.0)
        async with ProxyServer(settings) as server:
            first = await chat_raw(server, BODY)
            fresh = await chat_raw(server, BODY, headers={"Cache-Control": "max-age=0"})
    assert first.headers["X-Cache"] == "MISS"
    assert fresh.headers["X-Cache"] == "MISS"
    assert fake_upstream.chat_calls == 2


async def test_a_lookup_skipped_on_purpose_is_counted_skipped_not_bypass(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """no-cache answers X-Cache: BYPASS, but the cache-results metric says `skipped` (chat and the
    per-item embeddings flow alike): `bypass` — what the Redis alert watches — stays for a store
    that failed, so clients refreshing entries cannot page anyone."""
    no_cache = {"Cache-Control": "no-cache"}
    chat = await chat_raw(proxy, BODY, headers=no_cache)
    embedding = await send_raw(
        f"{proxy.url}/embeddings",
        {"model": "text-embedding-3-small", "input": ["skip me"]},
        headers=no_cache,
    )
    assert chat.headers["X-Cache"] == embedding.headers["X-Cache"] == "BYPASS"
    text = await metrics_text(proxy)
    for endpoint in ("chat.completions", "embeddings"):
        assert metric_value(text, "llm_proxy_cache_results_total", endpoint=endpoint, result="skipped") == 1
        assert metric_value(text, "llm_proxy_cache_results_total", endpoint=endpoint, result="bypass") == 0
