"""The Responses API's ``image_generation`` tool through the proxy: each ``image_generation_call``
``result`` stored once as a raw-bytes blob, byte-identical on JSON and streamed hits, and priced
per image on top of the text model's tokens (the tool is billed apart from ``usage``)."""

from __future__ import annotations

import base64

import pytest
import redis.asyncio as aioredis
from openai.types.responses.response_output_item import ImageGenerationCall

from proxy.cache.entry import decode_entry
from tests.e2e_helpers import async_client, entry_key_of, redis_keys
from tests.fake_upstream import FakeUpstream, assert_valid_png
from tests.images_helpers import SMALL_PNG, named_events
from tests.managed_helpers import metric_value, metrics_text
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.responses_helpers import IMAGE_TOOL, MODEL, plain, respond_raw
from tests.test_hit_path import HIT_PACKAGES, traced


@pytest.fixture(autouse=True)
def small_images(fake_upstream: FakeUpstream) -> None:
    """20 kB PNGs: big enough to be stored as blobs, small enough to be quick."""
    fake_upstream.state.image_bytes = SMALL_PNG


def image_result(answer: dict[str, object]) -> str:
    """The base64 ``result`` of the answer's first output (the image call), checked as a PNG."""
    output = answer["output"]
    assert isinstance(output, list)
    call = output[0]
    assert call["type"] == "image_generation_call"
    result: str = call["result"]
    assert_valid_png(base64.b64decode(result, validate=True))
    return result


async def test_an_image_call_result_is_byte_identical_on_hits_and_stored_once_as_a_blob(
    proxy: ProxyServer, fake_upstream: FakeUpstream, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """JSON MISS, JSON HIT, streamed HIT: one upstream call, the same bytes; the entry is a small
    template with one blob reference at output 0, and the PNG is one blob of its raw bytes."""
    body = {"model": MODEL, "input": "Draw a fox", "tools": [IMAGE_TOOL]}
    miss = await respond_raw(proxy, body)
    hit = await respond_raw(proxy, body)
    streamed = await respond_raw(proxy, {**body, "stream": True})
    assert [r.headers["X-Cache"] for r in (miss, hit, streamed)] == ["MISS", "HIT", "HIT"]
    assert fake_upstream.state.calls["responses"] == 1
    assert hit.body == miss.body
    result = image_result(miss.json())
    events = named_events(streamed.body)
    done = [data["item"] for name, data in events if name == "response.output_item.done"]
    assert done[0]["result"] == result
    assert image_result(events[-1][1]["response"]) == result
    png = base64.b64decode(result)
    entry = await redis_client.get(await entry_key_of(redis_client, key_prefix, miss.headers["X-Cache-Key"]))
    assert entry is not None
    meta, template = decode_entry(entry)
    assert [ref.position for ref in meta.blobs] == [(0, 0)]
    assert result.encode() not in bytes(template)
    assert len(template) < len(result) // 4
    blobs = await redis_keys(redis_client, f"{key_prefix}:blob:*")
    assert blobs == [f"{key_prefix}:blob:{meta.blobs[0].sha256}:0".encode()]
    assert await redis_client.get(blobs[0]) == png


async def test_the_sdk_accumulates_a_replayed_image_call(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """A streamed hit of a stored image answer: the SDK's stream helper ends with the same
    Response, its first output an ImageGenerationCall with the stored result."""
    async with async_client(proxy) as client:
        stored = await client.responses.create(model=MODEL, input="Draw a cat", tools=[IMAGE_TOOL])
        async with client.responses.stream(model=MODEL, input="Draw a cat", tools=[IMAGE_TOOL]) as stream:
            types = [event.type async for event in stream]
            final = await stream.get_final_response()
    assert fake_upstream.state.calls["responses"] == 1
    assert types[:7] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
        "response.image_generation_call.completed",
        "response.output_item.done",
    ]
    call = final.output[0]
    assert isinstance(call, ImageGenerationCall)
    assert call.result == stored.output[0].result  # type: ignore[union-attr]
    assert plain(final) == stored.to_dict()


async def test_a_live_image_stream_is_folded_into_the_stored_answer(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """A streamed miss with partial images: the previews go to the client, the completed
    response is stored, and a JSON hit carries the same image."""
    body = {"model": MODEL, "input": "Draw an owl", "tools": [{**IMAGE_TOOL, "partial_images": 2}]}
    live = await respond_raw(proxy, {**body, "stream": True})
    names = [name for name, _ in named_events(live.body)]
    assert names.count("response.image_generation_call.partial_image") == 2
    hit = await respond_raw(proxy, body)
    assert hit.headers["X-Cache"] == "HIT"
    assert image_result(hit.json()) == image_result(named_events(live.body)[-1][1]["response"])
    assert fake_upstream.state.calls["responses"] == 1


@pytest.mark.parametrize(
    ("tool", "per_image"),
    [
        pytest.param(IMAGE_TOOL, 1056 * 40 / 1e6, id="gpt-image-1-by-default"),
        pytest.param({**IMAGE_TOOL, "model": "gpt-image-1-mini"}, 1056 * 8 / 1e6, id="gpt-image-1-mini"),
    ],
)
async def test_images_are_priced_per_image_of_the_tools_model_on_top_of_the_tokens(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, tool: dict[str, object], per_image: float
) -> None:
    """The miss costs its tokens at the text model's prices plus one image at the ``per_image`` of
    the tool's model (built in: a medium 1024x1024 image, 1,056 output tokens): the tool is billed
    apart from ``usage``. The hit saves exactly that."""
    fake_upstream.state.image_bytes = SMALL_PNG
    pricing = {MODEL: {"input_per_million": 1_000, "output_per_million": 2_000}}
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, pricing=pricing)
    async with ProxyServer(settings) as proxy:
        body = {"model": MODEL, "input": "Draw a priced fox", "tools": [tool]}
        usage = (await respond_raw(proxy, body)).json()["usage"]
        await respond_raw(proxy, body)
        text = await metrics_text(proxy)
    cost = usage["input_tokens"] * 0.001 + usage["output_tokens"] * 0.002 + per_image
    assert metric_value(text, "llm_proxy_cost_usd_total", model=MODEL) == pytest.approx(cost)
    assert metric_value(text, "llm_proxy_cost_saved_usd_total", model=MODEL) == pytest.approx(cost)
    assert metric_value(text, "llm_proxy_images_generated_total", model=MODEL) == 1


async def test_a_hot_responses_hit_crosses_the_same_five_packages(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """A traced hot-tier hit of an image answer runs web, pipeline, cache, keys and obs code only,
    like chat's: the body was parsed before (the request memo), and no store, flight, upstream or
    budget code runs."""
    body = {"model": MODEL, "input": "the hot path", "tools": [IMAGE_TOOL]}
    async with ProxyServer(proxy_settings(fake_upstream.url, None, key_prefix)) as proxy:
        first = await respond_raw(proxy, body)
        await respond_raw(proxy, body)
        modules: dict[str, set[str]] = {}
        with traced(modules):
            hit = await respond_raw(proxy, body)
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.body == first.body
    assert {name.split(".")[1] for name in modules} == HIT_PACKAGES
    assert not any(name.startswith("proxy.endpoints") for name in modules)
    assert not any(name.startswith(("proxy.storage", "proxy.flight", "proxy.upstream")) for name in modules)
