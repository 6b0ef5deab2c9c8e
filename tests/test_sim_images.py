"""The simulated Images API driven with the openai SDK: shapes, determinism, streams, validation."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from openai.types import ImageGenCompletedEvent, ImageGenPartialImageEvent, ImagesResponse

from tests.fake_upstream import FakeUpstream
from tests.sim_clients import (
    API_KEY,
    SMALL_IMAGE_BYTES,
    assert_openai_error,
    png_from_b64,
    sdk_fixture,
    small_upstream_fixture,
)

upstream = pytest.fixture(small_upstream_fixture)
client = pytest.fixture(sdk_fixture)

GEMINI = "gemini-2.5-flash-image-preview"


async def only_image(client: openai.AsyncOpenAI, **params: Any) -> str:
    """The base64 PNG of a one-image generation."""
    answer = await client.images.generate(**params)
    assert answer.data is not None
    (image,) = answer.data
    assert image.b64_json is not None
    return image.b64_json


async def test_generate_answers_as_gpt_image_1_with_usage(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """gpt-image-1 (the default model): b64_json PNGs, resolved settings and token usage."""
    before = int(time.time())
    answer = await client.images.generate(prompt="a red fox", n=2, quality="high", size="1536x1024")
    assert isinstance(answer, ImagesResponse)
    assert before <= answer.created <= int(time.time())
    assert answer.data is not None
    assert len(answer.data) == 2
    first, second = (png_from_b64(str(image.b64_json)) for image in answer.data)
    assert first != second
    assert abs(len(first) - SMALL_IMAGE_BYTES) < SMALL_IMAGE_BYTES // 4
    assert all(image.url is None and image.revised_prompt is None for image in answer.data)
    assert (answer.size, answer.quality, answer.background, answer.output_format) == (
        "1536x1024",
        "high",
        "opaque",
        "png",
    )
    usage = answer.usage
    assert usage is not None
    assert usage.output_tokens == 2 * 6240  # 4160 per 1024x1024 high image, scaled by area
    assert usage.input_tokens == usage.input_tokens_details.text_tokens == len("a red fox") // 4
    assert usage.input_tokens_details.image_tokens == 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert upstream.state.calls["images"] == 1
    assert upstream.state.requests["images"] == [
        {"prompt": "a red fox", "n": 2, "quality": "high", "size": "1536x1024"}
    ]
    assert upstream.state.auth_headers == [f"Bearer {API_KEY}"]


async def test_images_usage_knob_drops_usage(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    """`images_usage = False`: the same answer without `usage` (the priced-per-image path)."""
    upstream.state.images_usage = False
    answer = await client.images.generate(prompt="a red fox")
    assert answer.usage is None
    assert answer.data is not None
    png_from_b64(str(answer.data[0].b64_json))
    stream = await client.images.generate(prompt="a red fox", stream=True)
    (completed,) = [event async for event in stream]
    assert isinstance(completed, ImageGenCompletedEvent)
    assert completed.to_dict().get("usage") is None


async def test_other_image_models_answer_as_llmgateway(client: openai.AsyncOpenAI) -> None:
    """A non-GPT image model: `created` and `data` of b64_json + revised_prompt only."""
    answer = await client.images.generate(model=GEMINI, prompt="a lighthouse")
    assert set(answer.to_dict()) == {"created", "data"}
    assert answer.data is not None
    (image,) = answer.data
    assert image.revised_prompt == "a lighthouse"
    png_from_b64(str(image.b64_json))


async def test_identical_requests_get_identical_bytes(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """Same request → same PNG bytes, even after the image cache is dropped; any change → new bytes."""
    params: dict[str, Any] = {"prompt": "a blue whale", "size": "1024x1024", "quality": "low"}
    first = await only_image(client, **params)
    upstream.state.image_cache.clear()
    assert await only_image(client, **params) == first
    # "auto"/absent resolve to the same picture; the prompt, quality or model make another.
    assert await only_image(client, prompt="a blue whale", size="auto", quality="low") == first
    for changed in ({"prompt": "a grey whale"}, {"quality": "medium"}, {"model": GEMINI}):
        assert await only_image(client, **(params | changed)) != first, changed


async def test_stream_sends_partial_images_then_the_completed_image(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """stream + partial_images=2: two partial events (0, 1), then completed with the same PNG
    and usage as the non-streamed answer."""
    stream = await client.images.generate(prompt="a castle", stream=True, partial_images=2)
    events = [event async for event in stream]
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    partials, completed = events[:2], events[2]
    assert all(isinstance(event, ImageGenPartialImageEvent) for event in partials)
    assert [
        event.partial_image_index for event in partials if isinstance(event, ImageGenPartialImageEvent)
    ] == [0, 1]
    partial_pngs = {png_from_b64(event.b64_json) for event in partials}
    assert isinstance(completed, ImageGenCompletedEvent)
    final = png_from_b64(completed.b64_json)
    assert len(partial_pngs) == 2
    assert final not in partial_pngs
    assert (completed.size, completed.quality, completed.background, completed.output_format) == (
        "1024x1024",
        "medium",
        "opaque",
        "png",
    )
    plain = await client.images.generate(prompt="a castle")
    assert plain.data is not None
    assert plain.data[0].b64_json == completed.b64_json
    assert plain.usage is not None
    assert completed.usage.output_tokens == plain.usage.output_tokens == 1056
    assert upstream.state.requests["images"][0] == {"prompt": "a castle", "stream": True, "partial_images": 2}


async def test_stream_honours_the_cut_knob(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    """cut_stream_after_chunks=1 with a clean end: the stream stops before `completed`."""
    upstream.state.cut_stream_after_chunks = 1
    upstream.state.cut_stream_abort = False
    stream = await client.images.generate(prompt="a castle", stream=True, partial_images=3)
    assert [event.type async for event in stream] == ["image_generation.partial_image"]


async def test_fail_next_and_valid_keys_apply(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    """A queued failure answers the next image request; an unknown bearer gets 401."""
    error = {"error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}}
    upstream.state.fail_next.append((503, error))
    with pytest.raises(openai.InternalServerError):
        await client.images.generate(prompt="x")
    assert (await client.images.generate(prompt="x")).data is not None
    upstream.state.valid_keys = {"sk-other"}
    with pytest.raises(openai.AuthenticationError):
        await client.images.generate(prompt="x")
    assert upstream.state.calls["images"] == 3


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        pytest.param({"n": 1}, "prompt", "missing_required_parameter", id="no-prompt"),
        pytest.param({"prompt": ""}, "prompt", "invalid_value", id="empty-prompt"),
        pytest.param({"prompt": ["x"]}, "prompt", "invalid_type", id="prompt-type"),
        pytest.param({"prompt": "x", "n": 0}, "n", "integer_below_min_value", id="n-0"),
        pytest.param({"prompt": "x", "n": 11}, "n", "integer_above_max_value", id="n-11"),
        pytest.param({"prompt": "x", "n": "2"}, "n", "invalid_type", id="n-string"),
        pytest.param({"prompt": "x", "response_format": "url"}, "response_format", "invalid_value", id="url"),
        pytest.param({"prompt": "x", "quality": "ultra"}, "quality", "invalid_value", id="quality"),
        pytest.param({"prompt": "x", "size": "10x10"}, "size", "invalid_value", id="size"),
        pytest.param({"prompt": "x", "model": "gpt-4o-mini"}, "model", "invalid_value", id="text-model"),
        pytest.param(
            {"prompt": "x", "partial_images": 4}, "partial_images", "integer_above_max_value", id="p4"
        ),
        pytest.param({"prompt": "x", "stream": True, "n": 2}, "n", "invalid_value", id="stream-n2"),
        pytest.param({"prompt": "x", "stream": "yes"}, "stream", "invalid_type", id="stream-type"),
    ],
)
async def test_bad_generation_requests_are_400(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, body: dict[str, Any], param: str, code: str
) -> None:
    """Bad input is a 400 in OpenAI's shape (SDK: BadRequestError), recorded, and draws nothing."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.post("/images/generations", body=body, cast_to=ImagesResponse)
    assert_openai_error({"error": caught.value.body}, param=param, code=code)
    assert upstream.state.requests["images"] == [body]
    assert upstream.state.image_cache == {}


async def test_models_list_prices_the_images_and_embedding_models(client: openai.AsyncOpenAI) -> None:
    """GET /v1/models names gpt-image-1 and the embedding models with LLMGateway-style prices."""
    page = await client.models.list()
    models = {model.id: model.to_dict() for model in page.data}
    assert models["gpt-image-1"]["pricing"]["completion"] == "40e-6"
    assert models["gpt-image-1"]["architecture"]["output_modalities"] == ["image"]
    for name, price in (("text-embedding-3-small", "0.02e-6"), ("text-embedding-3-large", "0.13e-6")):
        assert (models[name]["pricing"]["prompt"], models[name]["pricing"]["completion"]) == (price, "0")
