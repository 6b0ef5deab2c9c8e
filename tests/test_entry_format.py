"""The ``LCP2`` entry format: structure out of band, so no content can confuse a replay.

``LCP1`` spliced streamed images by splitting serialised chunks on an in-band marker and found cut
images by a ``;base64,`` suffix: an answer containing either broke every streamed replay of it.
"""

from __future__ import annotations

import copy
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pybase64
import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cache.entry import (
    MIN_BLOB_BYTES,
    CachedEntry,
    EntryMeta,
    decode_entry,
    encode_entry,
    split_response,
)
from proxy.endpoints.chat import ChatCompletions
from proxy.endpoints.chat_stream import StreamAssembler, parse_chunk, replay_chunks
from proxy.upstream.sse import sse
from tests.e2e_helpers import (
    IMAGE_MODEL,
    SMALL_IMAGE,
    TEXT_MODEL,
    chat_body,
    chat_raw,
    entry_key_of,
    sse_chunks,
)
from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.raw_upstream import RawUpstream, Received, json_response

OLD_MARKER = "\x1eLCP-BLOB\x1e"
PREFIX = "data:image/png;base64,"
# Strings that the old format treated as structure.
TRICKY = [OLD_MARKER, ";base64,", PREFIX, '"url":"', "\\u001eLCP-BLOB\\u001e", "data:image/png;base64,AAAA"]
CHAT = ChatCompletions()
PROPERTY = settings(max_examples=150, deadline=None, database=None)


def reassembled(sse_body: bytes) -> dict[str, Any]:
    """The response a streaming client folds the events back into."""
    assembler = StreamAssembler()
    for chunk in sse_chunks(sse_body):
        parsed = parse_chunk(orjson.dumps(chunk))
        assert parsed is not None
        assembler.add(parsed)
    assembler.done = True
    return assembler.response()


async def test_answer_containing_the_old_marker_streams_correctly_on_replay(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """An image answer whose text holds the old blob marker and ``;base64,`` is cached and
    replayed as a stream with the same text and the same image."""
    fake_upstream.state.image_bytes = SMALL_IMAGE
    prompt = f"draw {OLD_MARKER} and ;base64, and {PREFIX}AAAA"
    async with ProxyServer(proxy_settings(fake_upstream.url, redis_url, key_prefix)) as proxy:
        first = await chat_raw(proxy, chat_body(prompt, model=IMAGE_MODEL))
        assert (first.status, first.headers["X-Cache"]) == (200, "MISS")
        original = first.json()
        assert OLD_MARKER in original["choices"][0]["message"]["content"]
        streamed = await chat_raw(proxy, chat_body(prompt, model=IMAGE_MODEL, stream=True))
        again = await chat_raw(proxy, chat_body(prompt, model=IMAGE_MODEL))
    assert (streamed.status, streamed.headers["X-Cache"]) == (200, "HIT")
    assert streamed.body.endswith(b"data: [DONE]\n\n")
    replayed = reassembled(streamed.body)
    message = original["choices"][0]["message"]
    assert replayed["choices"][0]["message"]["content"] == message["content"]
    assert replayed["choices"][0]["message"]["images"] == message["images"]
    assert again.body == first.body
    assert fake_upstream.chat_calls == 1


def answer_with_empty_data_url(_request: Received) -> bytes:
    """An answer whose only image URL is exactly ``data:image/png;base64,`` (no payload)."""
    return json_response(
        {
            "id": "chatcmpl-e",
            "object": "chat.completion",
            "created": 1,
            "model": TEXT_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": f"empty {OLD_MARKER}",
                        "images": [{"type": "image_url", "image_url": {"url": PREFIX}}],
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


async def test_empty_data_url_replays_as_a_stream(redis_url: str, key_prefix: str) -> None:
    """A whole response whose image URL is exactly ``data:image/png;base64,`` replays intact."""
    async with (
        RawUpstream(answer_with_empty_data_url) as upstream,
        ProxyServer(proxy_settings(upstream.url, redis_url, key_prefix)) as proxy,
    ):
        first = await chat_raw(proxy, chat_body("empty"))
        streamed = await chat_raw(proxy, chat_body("empty", stream=True))
    assert (first.status, streamed.status, streamed.headers["X-Cache"]) == (200, 200, "HIT")
    assert streamed.body.endswith(b"data: [DONE]\n\n")
    assert reassembled(streamed.body)["choices"][0]["message"] == first.json()["choices"][0]["message"]


def lcp1_record(content: str) -> bytes:
    """An entry as the previous format wrote it (no blobs): magic, header, template."""
    doc = orjson.loads(answer_with_empty_data_url(Received(b"")).split(b"\r\n\r\n", 1)[1])
    doc["choices"][0]["message"] = {"role": "assistant", "content": content}
    header = orjson.dumps({"c": 1.0, "m": TEXT_MODEL, "p": 1, "o": 1, "i": 0, "b": [], "e": None})
    return struct.pack(">4sI", b"LCP1", len(header)) + header + orjson.dumps(doc)


@pytest.fixture
async def no_hot_tier_proxy(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> AsyncIterator[ProxyServer]:
    """Every lookup reads Redis (no in-process hot tier)."""
    async with ProxyServer(
        proxy_settings(fake_upstream.url, redis_url, key_prefix, hot_cache_bytes=0)
    ) as proxy:
        yield proxy


async def test_lcp1_entry_is_a_miss_and_is_overwritten(
    no_hot_tier_proxy: ProxyServer, fake_upstream: FakeUpstream, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """An entry in the old format is never served: the request goes upstream and the answer
    replaces it in the new format."""
    body = chat_body("old entry")
    first = await chat_raw(no_hot_tier_proxy, body)
    key = await entry_key_of(redis_client, key_prefix, first.headers["X-Cache-Key"])
    await redis_client.set(key, lcp1_record("STALE ANSWER FROM LCP1"), ex=600)
    second = await chat_raw(no_hot_tier_proxy, body)
    assert (second.status, second.headers["X-Cache"]) == (200, "MISS")
    assert b"STALE" not in second.body
    assert fake_upstream.chat_calls == 2
    stored = await redis_client.get(key)
    assert stored is not None
    assert stored[:4] == b"LCP2"
    third = await chat_raw(no_hot_tier_proxy, body)
    assert (third.headers["X-Cache"], third.body) == ("HIT", second.body)


# --- property: any stored response round-trips --------------------------------------------

texts = st.one_of(
    st.text(max_size=30), st.sampled_from(TRICKY), st.lists(st.sampled_from(TRICKY)).map("".join)
)
pngs = st.one_of(st.binary(min_size=MIN_BLOB_BYTES, max_size=3000), st.binary(max_size=50))


@st.composite
def stored_responses(draw: st.DrawFn) -> dict[str, Any]:
    """Completions with tricky text anywhere, 1-3 choices, images large/small/empty/non-data, and
    sometimes a data URL of one of its own images quoted in the text."""
    choices = []
    quoted: list[str] = []
    for index in range(draw(st.integers(1, 3))):
        images = []
        for png in draw(st.lists(pngs, max_size=3)):
            url = draw(
                st.sampled_from([PREFIX + pybase64.b64encode(png).decode(), PREFIX, "https://x.test/a.png"])
            )
            images.append({"type": "image_url", "image_url": {"url": url}})
            quoted.append(url)
        message: dict[str, Any] = {"role": "assistant", "content": draw(st.none() | texts)}
        if images:
            message["images"] = images
        if draw(st.booleans()) and quoted:
            message["content"] = f"{message['content']} {draw(st.sampled_from(quoted))}"
        choices.append(
            {"index": index, "message": message, "finish_reason": draw(st.sampled_from(["stop", "length"]))}
        )
    return {
        "id": draw(texts),
        "object": "chat.completion",
        "created": 1,
        "model": draw(texts),
        "choices": choices,
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


def serialised(doc: dict[str, Any], style: int) -> bytes:
    """The response as different servers write it: compact, indented, ASCII-escaped."""
    if style == 0:
        return orjson.dumps(doc)
    if style == 1:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    return json.dumps(doc, ensure_ascii=True).encode()


def assert_round_trips(doc: dict[str, Any], raw: bytes, include_usage: bool) -> int:
    """Store ``raw`` (``doc`` parsed), read it back, check both replays; how many blobs were cut."""
    split = split_response(raw, doc, CHAT.blob_slots)
    meta = EntryMeta(1.0, "m", 1, 2, 0, split.refs)
    decoded, template = decode_entry(encode_entry(meta, split.template))
    entry = CachedEntry("k", decoded, template, tuple(split.blobs[ref.sha256] for ref in decoded.blobs))
    assert entry.json_body() == raw
    expected = b"".join(
        sse(orjson.dumps(chunk)) for chunk in replay_chunks(copy.deepcopy(doc), include_usage)
    )
    assert b"".join(
        entry.sse_parts(CHAT.blob_slots, lambda stored: CHAT.replay(stored, include_usage))
    ) == expected + sse(b"[DONE]")
    return len(split.refs)


@PROPERTY
@given(stored_responses(), st.integers(0, 2), st.booleans())
def test_any_stored_response_round_trips(doc: dict[str, Any], style: int, include_usage: bool) -> None:
    """Stored and read back, any response rebuilds its exact bytes (JSON hit) and replays as the
    very SSE events the original document gives (stream hit), whatever its text contains."""
    assert_round_trips(doc, serialised(doc, style), include_usage)


def test_image_url_quoted_in_the_text_first_is_not_cut_from_the_text() -> None:
    """The first occurrence of an image's payload in the bytes is in the text: the split must
    not cut it there (the template would parse to the wrong document); both replays stay exact."""
    url = PREFIX + pybase64.b64encode(bytes(range(256)) * 8).decode()
    doc = {
        "id": "c",
        "choices": [
            {
                "index": 0,
                "message": {"content": f"here it is: {url}", "images": [{"image_url": {"url": url}}]},
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {"content": "x", "images": [{"image_url": {"url": url}}]},
                "finish_reason": "stop",
            },
        ],
    }
    assert assert_round_trips(doc, orjson.dumps(doc), True) in (0, 2)


def test_large_images_are_cut_and_replayed_by_position() -> None:
    """Images large enough become blobs, one per position, and replay into the right chunks."""
    first, second = (PREFIX + pybase64.b64encode(bytes([n]) * 3000).decode() for n in (1, 2))
    doc = {
        "id": f"c{OLD_MARKER}",
        "model": ";base64,",
        "choices": [
            {
                "index": 1,
                "message": {"content": OLD_MARKER, "images": [{"image_url": {"url": second}}]},
                "finish_reason": "stop",
            },
            {
                "index": 0,
                "message": {"content": None, "images": [{"image_url": {"url": first}}]},
                "finish_reason": "stop",
            },
        ],
    }
    assert assert_round_trips(doc, orjson.dumps(doc), False) == 2
