"""The simulated `/v1/images/edits` (multipart) driven with the openai SDK and raw forms."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import openai
import pytest
from openai.types import ImageEditCompletedEvent, ImageEditPartialImageEvent

from proxy.sim.png import make_png
from tests.fake_upstream import FakeUpstream
from tests.sim_clients import assert_openai_error, png_from_b64, post_raw, sdk_fixture, small_upstream_fixture

upstream = pytest.fixture(small_upstream_fixture)
client = pytest.fixture(sdk_fixture)

PHOTO = make_png("photo", 3000)
OTHER_PHOTO = make_png("other photo", 3000)
MASK = make_png("mask", 1000)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def edit_b64(client: openai.AsyncOpenAI, **params: object) -> str:
    answer = await client.images.edit(**params)
    assert answer.data is not None
    (image,) = answer.data
    return str(image.b64_json)


async def test_edit_with_one_file(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    """One upload as `image`: a PNG answer with usage counting the input image; the record names
    the field, filename, content type, size and sha256 of the file and every text field."""
    answer = await client.images.edit(image=("photo.png", PHOTO, "image/png"), prompt="add a hat", n=1)
    assert answer.data is not None
    png_from_b64(str(answer.data[0].b64_json))
    assert answer.usage is not None
    assert answer.usage.input_tokens_details.image_tokens == 765
    assert answer.usage.input_tokens == 765 + len("add a hat") // 4
    assert answer.usage.output_tokens == 1056
    (record,) = upstream.state.requests["images_edits"]
    assert record["content_type"] == "multipart/form-data"
    assert record["fields"] == {"prompt": "add a hat", "n": "1"}
    assert record["files"] == [
        {
            "field": "image",
            "filename": "photo.png",
            "content_type": "image/png",
            "size": len(PHOTO),
            "sha256": sha(PHOTO),
            "format": "png",
        }
    ]
    assert upstream.state.calls["images_edits"] == 1


async def test_edit_with_two_files_and_a_mask(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    """A list of uploads arrives as repeated `image[]` parts, in order; the mask as `mask`."""
    images = [("a.png", PHOTO, "image/png"), ("b.png", OTHER_PHOTO, "image/png")]
    answer = await client.images.edit(image=images, mask=("m.png", MASK, "image/png"), prompt="merge them")
    assert answer.usage is not None
    assert answer.usage.input_tokens_details.image_tokens == 2 * 765
    (record,) = upstream.state.requests["images_edits"]
    assert [(f["field"], f["filename"], f["sha256"]) for f in record["files"]] == [
        ("image[]", "a.png", sha(PHOTO)),
        ("image[]", "b.png", sha(OTHER_PHOTO)),
        ("mask", "m.png", sha(MASK)),
    ]


async def test_edit_image_is_seeded_by_prompt_and_upload_bytes(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """Same prompt and bytes → same PNG (whatever the filename); other bytes, order, mask or
    prompt → another PNG."""
    base = await edit_b64(client, image=("photo.png", PHOTO, "image/png"), prompt="add a hat")
    upstream.state.image_cache.clear()
    assert await edit_b64(client, image=("renamed.png", PHOTO, "image/png"), prompt="add a hat") == base
    variants = [
        {"image": ("photo.png", OTHER_PHOTO, "image/png"), "prompt": "add a hat"},
        {"image": ("photo.png", PHOTO, "image/png"), "prompt": "add a scarf"},
        {
            "image": ("photo.png", PHOTO, "image/png"),
            "prompt": "add a hat",
            "mask": ("m.png", MASK, "image/png"),
        },
    ]
    results = {base}
    for params in variants:
        results.add(await edit_b64(client, **params))
    pair = [("a.png", PHOTO, "image/png"), ("b.png", OTHER_PHOTO, "image/png")]
    results.add(await edit_b64(client, image=pair, prompt="add a hat"))
    results.add(await edit_b64(client, image=pair[::-1], prompt="add a hat"))
    assert len(results) == 6


async def test_edit_stream_sends_image_edit_events(client: openai.AsyncOpenAI) -> None:
    """stream=True with partial_images=1: `image_edit.partial_image` then `image_edit.completed`
    carrying the PNG the non-streamed edit returns."""
    stream = await client.images.edit(
        image=("photo.png", PHOTO, "image/png"), prompt="add a hat", stream=True, partial_images=1
    )
    partial, completed = [event async for event in stream]
    assert isinstance(partial, ImageEditPartialImageEvent)
    assert (partial.type, partial.partial_image_index) == ("image_edit.partial_image", 0)
    assert isinstance(completed, ImageEditCompletedEvent)
    assert completed.type == "image_edit.completed"
    assert completed.usage.input_tokens_details.image_tokens == 765
    plain = await edit_b64(client, image=("photo.png", PHOTO, "image/png"), prompt="add a hat")
    assert completed.b64_json == plain
    assert png_from_b64(partial.b64_json) != png_from_b64(plain)


async def test_an_upload_that_is_not_an_image_is_400(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """A text file as `image` (or a JPEG as `mask`) is refused like OpenAI refuses the mimetype."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.edit(image=("notes.txt", b"hello", "text/plain"), prompt="x")
    message = assert_openai_error({"error": caught.value.body}, param="image", code="invalid_image_format")
    assert "text/plain" in message
    jpeg = b"\xff\xd8\xff\xe0" + bytes(100)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.edit(
            image=("p.png", PHOTO, "image/png"), mask=("m.jpg", jpeg, "image/jpeg"), prompt="x"
        )
    assert_openai_error({"error": caught.value.body}, param="mask", code="invalid_image_format")
    assert upstream.state.image_cache == {}


def form(*, file: bool = True, prompt: str | None = "x", **fields: str) -> aiohttp.FormData:
    """A multipart edit form: an `image` file unless `file=False`, a prompt, text `fields`."""
    data = aiohttp.FormData(default_to_multipart=True)
    if file:
        data.add_field("image", PHOTO, filename="p.png", content_type="image/png")
    if prompt is not None:
        data.add_field("prompt", prompt)
    for name, value in fields.items():
        data.add_field(name, value)
    return data


@pytest.mark.parametrize(
    ("parts", "param", "code"),
    [
        pytest.param({"file": False}, "image", "missing_required_parameter", id="no-image"),
        pytest.param({"prompt": None}, "prompt", "missing_required_parameter", id="no-prompt"),
        pytest.param(
            {"file": False, "image_text": "x"}, "image", "missing_required_parameter", id="other-field"
        ),
        pytest.param({"n": "0"}, "n", "integer_below_min_value", id="n-0"),
        pytest.param({"n": "two"}, "n", "invalid_type", id="n-text"),
        pytest.param({"input_fidelity": "max"}, "input_fidelity", "invalid_value", id="fidelity"),
        pytest.param({"response_format": "url"}, "response_format", "invalid_value", id="url"),
    ],
)
async def test_bad_edit_forms_are_400(
    upstream: FakeUpstream, parts: dict[str, Any], param: str, code: str
) -> None:
    """Missing image or prompt and bad options get OpenAI's 400; the form is still recorded."""
    status, body = await post_raw(upstream, "/images/edits", form(**parts))
    assert status == 400
    assert_openai_error(body, param=param, code=code)
    assert len(upstream.state.requests["images_edits"]) == 1


async def test_image_sent_as_text_and_non_multipart_bodies_are_400(upstream: FakeUpstream) -> None:
    """`image` as a text field is a type error; a JSON body is refused before anything is read."""
    data = form(file=False, image="not a file")
    status, body = await post_raw(upstream, "/images/edits", data)
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "invalid_type", "image")
    status, body = await post_raw(upstream, "/images/edits", {"prompt": "x", "image": "data:..."})
    assert status == 400
    assert_openai_error(body, param=None, code="invalid_content_type")
    assert upstream.state.calls["images_edits"] == 2
    assert len(upstream.state.requests["images_edits"]) == 1  # the JSON body was never parsed
