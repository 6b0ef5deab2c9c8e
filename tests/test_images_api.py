"""``POST /v1/images/generations`` through the proxy: the openai SDK against the simulator, real Redis.

MISS then a byte-identical HIT with no second upstream call, streams (partial images relayed, the
completed image stored, a hit replayed as events the SDK parses), one entry for stream and JSON,
single flight, tenant isolation, bad input, URL answers passed through, the stored form.
"""

from __future__ import annotations

import asyncio
import base64

import openai
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from proxy.cache.entry import decode_entry
from tests.e2e_helpers import API_KEY, async_client, entry_key_of, redis_keys
from tests.fake_upstream import FakeUpstream
from tests.images_helpers import GATEWAY_IMAGE, GPT_IMAGE, SMALL_PNG, generate_raw, named_events, pngs
from tests.managed_helpers import metric_value, metrics_text
from tests.proxy_harness import ProxyServer, free_port, proxy_settings
from tests.test_hit_path import HIT_PACKAGES, traced


@pytest.fixture(autouse=True)
def small_images(fake_upstream: FakeUpstream) -> None:
    """20 kB PNGs: big enough to be stored as blobs, small enough to be quick."""
    fake_upstream.state.image_bytes = SMALL_PNG


async def test_generate_misses_then_hits_with_byte_identical_pngs(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """images.generate twice: MISS then HIT, one upstream call, the same JSON bytes and PNGs."""
    async with async_client(proxy) as client:
        first = await client.images.with_raw_response.generate(model=GPT_IMAGE, prompt="a red fox", n=2)
        second = await client.images.with_raw_response.generate(model=GPT_IMAGE, prompt="a red fox", n=2)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert fake_upstream.state.calls["images"] == 1
    assert first.content == second.content
    miss, hit = orjson.loads(first.content), orjson.loads(second.content)
    assert len(pngs(hit)) == 2
    assert pngs(miss) == pngs(hit)
    assert second.parse().usage == first.parse().usage
    (sent,) = fake_upstream.state.requests["images"]
    assert sent == {"model": GPT_IMAGE, "prompt": "a red fox", "n": 2}


async def test_stream_relays_partial_images_and_a_hit_replays_the_completed_image(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """stream=True, partial_images=2: the miss relays both previews and the completed image; the
    identical request is a HIT replayed as one completed event with the same PNG and usage."""
    async with async_client(proxy) as client:
        live = [
            e
            async for e in await client.images.generate(
                model=GPT_IMAGE, prompt="fox", stream=True, partial_images=2
            )
        ]
        replayed = [
            e
            async for e in await client.images.generate(
                model=GPT_IMAGE, prompt="fox", stream=True, partial_images=2
            )
        ]
    assert [e.type for e in live] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    (completed,) = replayed
    assert completed.type == "image_generation.completed"
    assert completed.b64_json == live[-1].b64_json
    assert completed.usage == live[-1].usage
    assert (completed.size, completed.quality) == (live[-1].size, live[-1].quality)
    assert fake_upstream.state.calls["images"] == 1


async def test_a_stream_hit_is_valid_images_sse_with_the_x_cache_headers(proxy: ProxyServer) -> None:
    """On the wire a replayed stream is ``event: image_generation.completed`` + its data, no
    ``[DONE]``, with X-Cache: HIT and the key."""
    body = {"model": GPT_IMAGE, "prompt": "wire", "stream": True}
    miss = await generate_raw(proxy, body)
    hit = await generate_raw(proxy, body)
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert hit.headers["X-Cache-Key"] == miss.headers["X-Cache-Key"]
    assert hit.headers["Content-Type"].startswith("text/event-stream")
    (event,) = named_events(hit.body)
    assert event[0] == "image_generation.completed"
    assert event[1]["type"] == "image_generation.completed"
    assert named_events(miss.body)[-1][1]["b64_json"] == event[1]["b64_json"]


@pytest.mark.parametrize("first_streams", [True, False], ids=["stream-first", "json-first"])
async def test_stream_and_json_share_one_entry(
    proxy: ProxyServer, fake_upstream: FakeUpstream, first_streams: bool
) -> None:
    """A streamed answer serves a JSON request and a JSON answer serves a stream: one upstream call."""
    body = {"model": GPT_IMAGE, "prompt": "shared entry"}
    first = await generate_raw(proxy, {**body, "stream": first_streams})
    second = await generate_raw(proxy, {**body, "stream": not first_streams})
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert fake_upstream.state.calls["images"] == 1
    stream, plain = (first, second) if first_streams else (second, first)
    completed = named_events(stream.body)[-1][1]
    answer = plain.json()
    assert completed["b64_json"] == answer["data"][0]["b64_json"]
    assert completed["usage"] == answer["usage"]
    assert answer["created"] == completed["created_at"]


async def test_partial_images_do_not_split_the_cache_but_the_user_does(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """``partial_images`` changes only the previews: same entry. ``user`` is echoed by the API as
    the effective safety identifier, so two end users never share an answer."""
    base = {"model": GPT_IMAGE, "prompt": "keyed", "stream": True}
    replies = [
        await generate_raw(proxy, {**base, "partial_images": 1}),
        await generate_raw(proxy, {**base, "partial_images": 3}),
        await generate_raw(proxy, {**base, "user": "alice"}),
        await generate_raw(proxy, {**base, "safety_identifier": "alice"}),
        await generate_raw(proxy, {**base, "user": "bob"}),
    ]
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "HIT", "MISS", "HIT", "MISS"]
    assert fake_upstream.state.calls["images"] == 3


async def test_identical_concurrent_generations_make_one_upstream_call(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """Eight identical misses at once: one upstream call, one MISS, the rest COALESCED (or HIT if
    late), every answer the same bytes."""
    fake_upstream.state.image_latency_s = 0.5
    replies = await asyncio.gather(
        *(generate_raw(proxy, {"model": GPT_IMAGE, "prompt": "crowd"}) for _ in range(8))
    )
    assert fake_upstream.state.calls["images"] == 1
    assert sorted(r.headers["X-Cache"] for r in replies).count("MISS") == 1
    assert {r.headers["X-Cache"] for r in replies} <= {"MISS", "COALESCED", "HIT"}
    assert len({r.body for r in replies}) == 1


async def test_two_bearers_never_share_an_image(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """The same request from two pass-through tenants is two entries and two upstream calls."""
    body = {"model": GPT_IMAGE, "prompt": "tenants"}
    first = await generate_raw(proxy, body, api_key="sk-tenant-one")
    other = await generate_raw(proxy, body, api_key="sk-tenant-two")
    again = await generate_raw(proxy, body, api_key="sk-tenant-one")
    assert [r.headers["X-Cache"] for r in (first, other, again)] == ["MISS", "MISS", "HIT"]
    assert first.headers["X-Cache-Key"] != other.headers["X-Cache-Key"]
    assert fake_upstream.state.calls["images"] == 2


GOOD = {"model": GPT_IMAGE, "prompt": "a fox"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param(b"{not json", None, id="not-json"),
        pytest.param(b"[1]", None, id="array"),
        pytest.param({"model": GPT_IMAGE}, "prompt", id="no-prompt"),
        pytest.param({**GOOD, "prompt": ""}, "prompt", id="empty-prompt"),
        pytest.param({**GOOD, "prompt": 7}, "prompt", id="prompt-number"),
        pytest.param({**GOOD, "n": 0}, "n", id="n-zero"),
        pytest.param({**GOOD, "n": 11}, "n", id="n-eleven"),
        pytest.param({**GOOD, "n": "2"}, "n", id="n-string"),
        pytest.param({**GOOD, "n": 1.5}, "n", id="n-float"),
        pytest.param({**GOOD, "stream": "yes"}, "stream", id="stream-string"),
        pytest.param({**GOOD, "partial_images": 4}, "partial_images", id="partial-images-four"),
        pytest.param({**GOOD, "size": 1024}, "size", id="size-number"),
        pytest.param({**GOOD, "model": ""}, "model", id="model-empty"),
        pytest.param({**GOOD, "model": "m" * 300}, "model", id="model-too-long"),
        pytest.param({**GOOD, "user": ["a"]}, "user", id="user-array"),
    ],
)
async def test_bad_generation_requests_are_400_and_not_forwarded(
    proxy: ProxyServer, fake_upstream: FakeUpstream, body: bytes | dict[str, object], param: str | None
) -> None:
    """Invalid bodies get OpenAI's error shape (``invalid_request_error``, the param named) and
    never reach the upstream."""
    reply = await generate_raw(proxy, body)
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"]
    assert fake_upstream.state.calls["images"] == 0


async def test_sdk_raises_bad_request_for_n_out_of_range(proxy: ProxyServer) -> None:
    """The openai SDK raises BadRequestError for n=11, as it would against OpenAI."""
    async with async_client(proxy) as client:
        with pytest.raises(openai.BadRequestError, match="'n'"):
            await client.images.generate(model=GPT_IMAGE, prompt="x", n=11)


async def test_url_answers_are_passed_through_and_never_stored(redis_url: str, key_prefix: str) -> None:
    """``response_format: "url"``: BYPASS, both requests reach the upstream, the URL answer goes to
    the client as sent and nothing is stored (a URL expires upstream)."""
    calls: list[bytes] = []

    async def answer(request: web.Request) -> web.Response:
        calls.append(await request.read())
        return web.json_response({"created": 1, "data": [{"url": "https://files.example/img.png"}]})

    upstream = web.Application()
    upstream.router.add_post("/v1/images/generations", answer)
    runner = web.AppRunner(upstream)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        settings = proxy_settings(f"http://127.0.0.1:{port}/v1", redis_url, key_prefix)
        async with ProxyServer(settings) as proxy:
            body = {"model": "dall-e-3", "prompt": "a fox", "response_format": "url"}
            replies = [await generate_raw(proxy, body) for _ in range(2)]
            client = aioredis.Redis.from_url(redis_url)
            stored = await redis_keys(client, f"{key_prefix}:r1:*")
            await client.aclose()
    finally:
        await runner.cleanup()
    assert [r.headers["X-Cache"] for r in replies] == ["BYPASS", "BYPASS"]
    assert replies[0].json()["data"][0]["url"] == "https://files.example/img.png"
    assert len(calls) == 2
    assert stored == []


async def test_an_answer_without_usage_is_priced_per_image(proxy: ProxyServer) -> None:
    """LLMGateway-shaped answers carry no usage: the miss costs 2 x $0.0387 and the hit saves it."""
    body = {"model": GATEWAY_IMAGE, "prompt": "gateway", "n": 2}
    await generate_raw(proxy, body)
    await generate_raw(proxy, body)
    text = await metrics_text(proxy)
    assert metric_value(text, "llm_proxy_cost_usd_total", model=GATEWAY_IMAGE) == pytest.approx(0.0774)
    assert metric_value(text, "llm_proxy_cost_saved_usd_total", model=GATEWAY_IMAGE) == pytest.approx(0.0774)
    assert metric_value(text, "llm_proxy_images_generated_total", model=GATEWAY_IMAGE) == 2


async def test_a_cut_image_stream_ends_with_an_error_event_and_is_not_stored(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """The upstream drops the connection after the partial images: the client gets an ``error``
    event (the SDK raises APIError), nothing is stored, the next request goes upstream again."""
    fake_upstream.state.cut_stream_after_chunks = 2
    body = {"model": GPT_IMAGE, "prompt": "cut", "stream": True, "partial_images": 2}
    cut = await generate_raw(proxy, body)
    events = named_events(cut.body)
    assert [name for name, _ in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "error",
    ]
    assert events[-1][1]["error"]["code"] == "upstream_stream_cut"
    fake_upstream.state.cut_stream_after_chunks = None
    again = await generate_raw(proxy, body)
    assert again.headers["X-Cache"] == "MISS"
    assert fake_upstream.state.calls["images"] == 2
    async with async_client(proxy) as client:
        fake_upstream.state.cut_stream_after_chunks = 1
        stream = await client.images.generate(model=GPT_IMAGE, prompt="cut 2", stream=True, partial_images=2)
        with pytest.raises(openai.APIError, match="ended before"):
            async for _ in stream:
                pass


async def test_each_png_is_stored_once_as_raw_bytes(
    proxy: ProxyServer, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """The entry keeps only a small template with out-of-band blob references; each PNG is a
    content-addressed blob of its raw bytes (two identical images in two entries: one blob)."""
    reply = await generate_raw(proxy, {"model": GPT_IMAGE, "prompt": "stored", "n": 2})
    png_bytes = pngs(reply.json())
    entry = await redis_client.get(await entry_key_of(redis_client, key_prefix, reply.headers["X-Cache-Key"]))
    assert entry is not None
    meta, template = decode_entry(entry)
    assert [ref.position for ref in meta.blobs] == [(0, 0), (1, 0)]
    assert len(template) < 1024
    assert base64.b64encode(png_bytes[0]) not in bytes(template)
    for ref, png in zip(meta.blobs, png_bytes, strict=True):
        chunks = await redis_client.mget(
            [f"{key_prefix}:blob:{ref.sha256}:{i}" for i in range(-(-ref.size // (256 * 1024 - 64)))]
        )
        assert b"".join(c for c in chunks if c is not None) == png
    assert (meta.prompt_tokens, meta.completion_tokens, meta.images) == (1, 2112, 2)


async def test_the_request_as_sent_reaches_the_upstream_with_the_callers_key(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """A pass-through miss forwards the body and the caller's bearer unchanged."""
    raw = b'{"prompt":"exact bytes","model":"gpt-image-1","size":"1024x1024","user":"u-1"}'
    await generate_raw(proxy, raw)
    (sent,) = fake_upstream.state.requests["images"]
    assert sent == orjson.loads(raw)
    assert fake_upstream.state.auth_headers[-1] == f"Bearer {API_KEY}"


async def test_a_hot_images_api_hit_crosses_the_same_five_packages(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """A traced hot-tier hit of /v1/images/generations runs web, pipeline, cache, keys and obs code
    only, like chat's: its body was identified before (no endpoint code), no store, flight,
    upstream or budget code."""
    fake_upstream.state.image_bytes = 200_000
    body = {"model": GPT_IMAGE, "prompt": "the hot path", "n": 2}
    async with ProxyServer(proxy_settings(fake_upstream.url, None, key_prefix)) as proxy:
        first = await generate_raw(proxy, body)
        await generate_raw(proxy, body)
        modules: dict[str, set[str]] = {}
        with traced(modules):
            hit = await generate_raw(proxy, body)
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.body == first.body
    assert {name.split(".")[1] for name in modules} == HIT_PACKAGES
    assert not any(  # identified before (the remembered Call): no parse, no endpoint code
        name.startswith(
            ("proxy.storage", "proxy.flight", "proxy.upstream", "proxy.endpoints", "proxy.pipeline.memo")
        )
        for name in modules
    )
