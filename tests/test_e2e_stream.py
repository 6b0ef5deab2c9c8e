"""Streamed chat completions through the proxy: live misses, replayed hits, shared entries."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletionToolParam

from tests.e2e_helpers import (
    IMAGE_MODEL,
    SMALL_IMAGE,
    TEXT_MODEL,
    StreamSummary,
    async_client,
    chat_body,
    chat_raw,
    message_images,
    sse_chunks,
    sse_data,
    summarize,
    sync_client,
    user,
)
from tests.fake_upstream import FakeUpstream, assert_valid_png, png_of
from tests.proxy_harness import ProxyServer

TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "lookup_weather",
            "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


async def stream_async(proxy: ProxyServer, model: str, text: str, **extra: Any) -> tuple[str, StreamSummary]:
    """One streamed request with the async SDK: (X-Cache, what the client assembled)."""
    async with async_client(proxy) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=user(text), stream=True, **extra
        )
        chunks = [chunk async for chunk in raw.parse()]
    return raw.headers["X-Cache"], summarize(chunks)


def stream_sync(proxy: ProxyServer, model: str, text: str, **extra: Any) -> tuple[str, StreamSummary]:
    """One streamed request with the sync SDK: (X-Cache, what the client assembled)."""
    with sync_client(proxy) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=user(text), stream=True, **extra
        )
        chunks = list(raw.parse())
    return raw.headers["X-Cache"], summarize(chunks)


@pytest.mark.parametrize("model", [TEXT_MODEL, IMAGE_MODEL])
async def test_sync_stream_miss_then_hit(proxy: ProxyServer, fake_upstream: FakeUpstream, model: str) -> None:
    """Sync SDK stream: the replayed hit has the same content, images and finish_reason, no upstream call."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    cache_one, miss = await asyncio.to_thread(stream_sync, proxy, model, "a green parrot")
    cache_two, hit = await asyncio.to_thread(stream_sync, proxy, model, "a green parrot")
    assert (cache_one, cache_two) == ("MISS", "HIT")
    assert fake_upstream.chat_calls == 1
    assert hit.content == miss.content != ""
    assert hit.images == miss.images
    assert len(hit.images) == (1 if model == IMAGE_MODEL else 0)
    assert hit.finish_reason == miss.finish_reason == "stop"


async def test_async_stream_image_hit_replays_the_png(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """Async SDK stream of a 1.5 MB image: the hit replays delta.images with the identical PNG."""
    cache_one, miss = await stream_async(proxy, IMAGE_MODEL, "a sailing boat")
    cache_two, hit = await stream_async(proxy, IMAGE_MODEL, "a sailing boat")
    assert (cache_one, cache_two) == ("MISS", "HIT")
    assert fake_upstream.chat_calls == 1
    assert len(hit.images) == 1
    assert png_of(hit.images[0]) == png_of(miss.images[0])
    assert_valid_png(png_of(hit.images[0]))
    assert hit.content == miss.content
    assert hit.finish_reason == "stop"


@pytest.mark.parametrize("include_usage", [True, False])
async def test_stream_hit_wire_format(
    proxy: ProxyServer, fake_upstream: FakeUpstream, include_usage: bool
) -> None:
    """A replayed stream ends with [DONE] and carries the usage chunk only when include_usage is true."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    await chat_raw(proxy, chat_body("a white horse", IMAGE_MODEL))  # stored by a non-stream miss
    body = chat_body(
        "a white horse", IMAGE_MODEL, stream=True, stream_options={"include_usage": include_usage}
    )
    reply = await chat_raw(proxy, body)
    assert reply.status == 200
    assert reply.headers["X-Cache"] == "HIT"
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert sse_data(reply.body)[-1] == b"[DONE]"
    chunks = sse_chunks(reply.body)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    usage_chunks = [chunk for chunk in chunks if chunk.get("usage")]
    if include_usage:
        assert len(usage_chunks) == 1
        assert usage_chunks[0]["choices"] == []
        assert usage_chunks[0]["usage"]["completion_tokens"] == 1290
    else:
        assert usage_chunks == []
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    images = [
        c["choices"][0]["delta"]["images"]
        for c in chunks
        if c["choices"] and "images" in c["choices"][0]["delta"]
    ]
    assert len(images) == 1
    assert fake_upstream.chat_calls == 1


async def test_stream_miss_hides_the_usage_chunk_the_proxy_asked_for(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """A stream miss without include_usage shows no usage chunk, though upstream was asked for one."""
    reply = await chat_raw(proxy, chat_body("a quiet street", stream=True))
    assert reply.headers["X-Cache"] == "MISS"
    sent = fake_upstream.state.chat_requests[-1]
    assert sent["stream_options"]["include_usage"] is True
    chunks = sse_chunks(reply.body)
    assert [chunk for chunk in chunks if chunk.get("usage")] == []
    assert all(chunk["choices"] for chunk in chunks)
    assert sse_data(reply.body)[-1] == b"[DONE]"


async def test_stream_miss_with_usage_passes_the_usage_chunk(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """A stream miss with include_usage shows the upstream's usage chunk exactly once."""
    _, miss = await stream_async(proxy, TEXT_MODEL, "a busy port", stream_options={"include_usage": True})
    assert len(miss.usage) == 1
    assert miss.usage[0]["total_tokens"] > 0


async def test_stream_miss_then_non_stream_hit(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """A streamed miss is assembled and stored; a non-stream request then hits with the same answer."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    cache_one, miss = await stream_async(proxy, IMAGE_MODEL, "a red barn")
    assert cache_one == "MISS"
    async with async_client(proxy) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=IMAGE_MODEL, messages=user("a red barn")
        )
    assert raw.headers["X-Cache"] == "HIT"
    hit = raw.parse()
    assert hit.choices[0].message.content == miss.content
    assert message_images(hit) == miss.images
    assert hit.choices[0].finish_reason == "stop"
    assert hit.usage is not None
    assert hit.usage.completion_tokens == 1290
    assert fake_upstream.chat_calls == 1


async def test_non_stream_miss_then_stream_hit(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """A non-stream miss is replayed as a stream on a streamed request, images included."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    async with async_client(proxy) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=IMAGE_MODEL, messages=user("a tall tree")
        )
    assert raw.headers["X-Cache"] == "MISS"
    miss = raw.parse()
    cache_two, hit = await stream_async(proxy, IMAGE_MODEL, "a tall tree")
    assert cache_two == "HIT"
    assert hit.content == miss.choices[0].message.content
    assert hit.images == message_images(miss)
    assert hit.finish_reason == "stop"
    assert fake_upstream.chat_calls == 1


async def test_tool_calls_survive_stream_store_and_replay(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """Streamed tool calls are assembled, stored and replayed (stream and non-stream) unchanged."""
    cache_one, miss = await stream_async(proxy, TEXT_MODEL, "weather in Oslo", tools=TOOLS)
    cache_two, hit = await stream_async(proxy, TEXT_MODEL, "weather in Oslo", tools=TOOLS)
    assert (cache_one, cache_two) == ("MISS", "HIT")
    assert miss.finish_reason == hit.finish_reason == "tool_calls"
    assert hit.tool_calls == miss.tool_calls
    call = hit.tool_calls[0]
    assert call["name"] == "lookup_weather"
    assert call["id"].startswith("call_")
    assert orjson.loads(call["arguments"])["query"] == "weather in Oslo"
    async with async_client(proxy) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=TEXT_MODEL, messages=user("weather in Oslo"), tools=TOOLS
        )
    assert raw.headers["X-Cache"] == "HIT"
    message = raw.parse().choices[0].message
    assert message.tool_calls is not None
    stored = message.tool_calls[0]
    assert stored.type == "function"
    assert (stored.id, stored.function.name, stored.function.arguments) == (
        call["id"],
        call["name"],
        call["arguments"],
    )
    assert fake_upstream.chat_calls == 1
