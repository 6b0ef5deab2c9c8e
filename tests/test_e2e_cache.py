"""Non-streamed chat completions through the proxy with the openai SDK: misses, hits, image blobs."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis

from tests.e2e_helpers import (
    IMAGE_MODEL,
    SMALL_IMAGE,
    TEXT_MODEL,
    async_client,
    chat_body,
    chat_raw,
    entry_key_of,
    message_images,
    redis_keys,
    sync_client,
    user,
)
from tests.fake_upstream import FakeUpstream, assert_valid_png, png_of
from tests.proxy_harness import ProxyServer
from tests.wire import exchange, request_bytes


@pytest.mark.parametrize("model", [TEXT_MODEL, IMAGE_MODEL])
async def test_sync_client_miss_then_hit(proxy: ProxyServer, fake_upstream: FakeUpstream, model: str) -> None:
    """Sync SDK: the second identical request is a HIT with the same answer and no upstream call."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    with sync_client(proxy) as client:
        create = client.chat.completions.with_raw_response.create
        first = await asyncio.to_thread(create, model=model, messages=user("a red fox"), temperature=0.2)
        assert first.headers["X-Cache"] == "MISS"
        assert fake_upstream.chat_calls == 1
        second = await asyncio.to_thread(create, model=model, messages=user("a red fox"), temperature=0.2)
    assert second.headers["X-Cache"] == "HIT"
    assert fake_upstream.chat_calls == 1
    assert second.headers["X-Cache-Key"] == first.headers["X-Cache-Key"]
    assert int(second.headers["Age"]) >= 0
    miss, hit = first.parse(), second.parse()
    assert hit.model_dump() == miss.model_dump()
    assert (hit.choices[0].message.content or "") != ""
    assert message_images(hit) == message_images(miss)
    assert len(message_images(hit)) == (1 if model == IMAGE_MODEL else 0)


@pytest.mark.parametrize("model", [TEXT_MODEL, IMAGE_MODEL])
async def test_async_client_miss_then_hit(
    proxy: ProxyServer, fake_upstream: FakeUpstream, model: str
) -> None:
    """Async SDK: the second identical request is a HIT with the same answer and no upstream call."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    async with async_client(proxy) as client:
        create = client.chat.completions.with_raw_response.create
        first = await create(model=model, messages=user("a blue whale"), seed=7)
        second = await create(model=model, messages=user("a blue whale"), seed=7)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert fake_upstream.chat_calls == 1
    assert second.headers["X-Cache-Key"] == first.headers["X-Cache-Key"]
    assert "Age" in second.headers
    assert second.parse().model_dump() == first.parse().model_dump()


async def test_full_size_image_hit_is_byte_identical(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """A 1.5 MB image hit returns the exact JSON bytes of the miss, and the same decoded PNG."""
    async with async_client(proxy) as client:
        create = client.chat.completions.with_raw_response.create
        first = await create(model=IMAGE_MODEL, messages=user("a lighthouse at dusk"))
        second = await create(model=IMAGE_MODEL, messages=user("a lighthouse at dusk"))
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert fake_upstream.chat_calls == 1
    assert second.content == first.content
    miss_png = png_of(message_images(first.parse())[0])
    hit_png = png_of(message_images(second.parse())[0])
    assert hit_png == miss_png
    assert len(hit_png) > 1_400_000
    assert_valid_png(hit_png)


async def test_ignored_field_shares_the_entry(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """Requests differing only in ignored fields (user, metadata, store) hit the same entry."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    body = chat_body("a snowy owl", IMAGE_MODEL)
    first = await chat_raw(proxy, {**body, "user": "alice"})
    second = await chat_raw(proxy, {**body, "user": "bob", "metadata": {"a": "b"}, "store": False})
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second.body == first.body
    assert fake_upstream.chat_calls == 1


async def test_same_png_in_two_entries_is_stored_once(
    proxy: ProxyServer, fake_upstream: FakeUpstream, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """Two different requests whose answers hold the same PNG make two entries but one blob."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    # The simulator's image depends on messages and seed only, so temperature changes the key
    # (two entries) but not the picture.
    first = await chat_raw(proxy, chat_body("a tabby cat", IMAGE_MODEL, temperature=0.1))
    second = await chat_raw(proxy, chat_body("a tabby cat", IMAGE_MODEL, temperature=0.9))
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "MISS")
    assert first.headers["X-Cache-Key"] != second.headers["X-Cache-Key"]
    url_one = first.json()["choices"][0]["message"]["images"][0]["image_url"]["url"]
    url_two = second.json()["choices"][0]["message"]["images"][0]["image_url"]["url"]
    assert url_one == url_two
    assert len(await redis_keys(redis_client, f"{key_prefix}:r1:*")) == 2
    chunks = await redis_keys(redis_client, f"{key_prefix}:blob:*")
    assert len({chunk.rsplit(b":", 1)[0] for chunk in chunks}) == 1  # one sha256, stored once
    ordered = sorted(chunks, key=lambda chunk: int(chunk.rsplit(b":", 1)[1]))
    assert b"".join([await redis_client.get(chunk) or b"" for chunk in ordered]) == png_of(url_one)
    for text_temperature, reply in ((0.1, first), (0.9, second)):  # both rebuilt from the one blob
        again = await chat_raw(proxy, chat_body("a tabby cat", IMAGE_MODEL, temperature=text_temperature))
        assert again.headers["X-Cache"] == "HIT"
        assert again.body == reply.body
    assert fake_upstream.chat_calls == 2


@pytest.mark.parametrize("image_bytes", [1_500_000, 1_260_000, 700_000])
async def test_redis_memory_per_image_is_about_the_png_size(
    proxy: ProxyServer,
    fake_upstream: FakeUpstream,
    redis_client: aioredis.Redis,
    key_prefix: str,
    image_bytes: int,
) -> None:
    """MEMORY USAGE of entry + blob chunks is at most 1.05 x the PNG bytes, whatever its size.

    1.26 MB is the bad case for a blob stored whole: jemalloc would round it up to 1.5 MiB.
    """
    fake_upstream.state.image_bytes = image_bytes
    reply = await chat_raw(proxy, chat_body("a mountain lake", IMAGE_MODEL))
    assert reply.headers["X-Cache"] == "MISS"
    png = png_of(reply.json()["choices"][0]["message"]["images"][0]["image_url"]["url"])
    assert len(png) > image_bytes * 0.95
    entry = await entry_key_of(redis_client, key_prefix, reply.headers["X-Cache-Key"])
    chunks = await redis_keys(redis_client, f"{key_prefix}:blob:*")
    used = 0
    for key in (entry, *chunks):
        usage = await redis_client.memory_usage(key, samples=0)
        assert usage is not None
        used += int(usage)
    assert used <= 1.05 * len(png), (used, len(png), used / len(png))


async def test_a_json_miss_goes_out_whole_with_a_content_length(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """A validated JSON miss is sent once it is handed to the store, headers and body together,
    framed by Content-Length (not chunked); the hit that follows has the same bytes."""
    body = orjson.dumps(chat_body("framed once"))
    headers = {"Authorization": "Bearer sk-framing", "Content-Type": "application/json"}
    raw = request_bytes("POST", "/v1/chat/completions", headers, body)
    miss = await exchange(proxy.port, raw)
    hit = await exchange(proxy.port, raw)
    assert (miss.status, miss.headers["x-cache"], hit.headers["x-cache"]) == (200, "MISS", "HIT")
    assert "transfer-encoding" not in miss.headers
    assert int(miss.headers["content-length"]) == len(miss.body) > 0
    assert hit.body == miss.body
    assert fake_upstream.chat_calls == 1
