"""``POST /v1/images/edits`` (multipart) through the proxy: the openai SDK and raw forms against the
simulator (and a recording upstream), real Redis.

The key covers every field value and the sha256 of every file, whatever the field order and the
boundary; the exact bytes received go upstream; the body limit applies while the upload streams.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest

from proxy.sim.png import make_png
from tests.e2e_helpers import API_KEY, async_client
from tests.fake_upstream import FakeUpstream
from tests.images_helpers import GPT_IMAGE, SMALL_PNG, edit_raw, multipart, pngs
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.raw_upstream import RawUpstream, Received, json_response

PHOTO = make_png("edit photo", 6000)
OTHER = make_png("edit other photo", 6000)
MASK = make_png("edit mask", 2000)


@pytest.fixture(autouse=True)
def small_images(fake_upstream: FakeUpstream) -> None:
    """20 kB PNGs answered: stored as blobs, quick to make."""
    fake_upstream.state.image_bytes = SMALL_PNG


async def test_edit_with_one_file_misses_then_hits_with_byte_identical_pngs(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """images.edit with one upload twice: MISS then HIT, one upstream call that received the
    upload and the fields, the same bytes and PNGs both times."""
    async with async_client(proxy) as client:
        replies = [
            await client.images.with_raw_response.edit(
                model=GPT_IMAGE, image=("photo.png", PHOTO, "image/png"), prompt="add a hat"
            )
            for _ in range(2)
        ]
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "HIT"]
    assert replies[0].content == replies[1].content
    assert pngs(orjson.loads(replies[0].content)) == pngs(orjson.loads(replies[1].content))
    assert fake_upstream.state.calls["images_edits"] == 1
    (record,) = fake_upstream.state.requests["images_edits"]
    assert record["fields"] == {"model": GPT_IMAGE, "prompt": "add a hat"}
    assert [(f["field"], f["size"], f["format"]) for f in record["files"]] == [("image", len(PHOTO), "png")]


async def test_edit_with_two_files_and_a_mask_hits_the_second_time(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """Two uploads (``image[]``) and a mask: one upstream call for two identical edits, usage counting
    both input images, a byte-identical HIT."""
    async with async_client(proxy) as client:
        answers = [
            await client.images.with_raw_response.edit(
                model=GPT_IMAGE,
                image=[("a.png", PHOTO, "image/png"), ("b.png", OTHER, "image/png")],
                mask=("mask.png", MASK, "image/png"),
                prompt="merge them",
                n=2,
            )
            for _ in range(2)
        ]
    assert [a.headers["X-Cache"] for a in answers] == ["MISS", "HIT"]
    assert answers[0].content == answers[1].content
    parsed = answers[1].parse()
    assert parsed.usage is not None
    assert parsed.usage.input_tokens_details.image_tokens == 2 * 765
    assert len(pngs(orjson.loads(answers[1].content))) == 2
    (record,) = fake_upstream.state.requests["images_edits"]
    assert [f["field"] for f in record["files"]] == ["image[]", "image[]", "mask"]


async def test_field_order_and_boundary_do_not_change_the_key(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """The same form sent by aiohttp's FormData and then as raw bytes with the fields in another
    order and another boundary: one key, a HIT, one upstream call."""
    form = aiohttp.FormData()
    form.add_field("prompt", "a scarf")
    form.add_field("model", GPT_IMAGE)
    form.add_field("image", PHOTO, filename="photo.png", content_type="image/png")
    form.add_field("n", "1")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{proxy.url}/images/edits", data=form, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as sent,
    ):
        first_key, first_cache, first_body = (
            sent.headers["X-Cache-Key"],
            sent.headers["X-Cache"],
            await sent.read(),
        )
    body, content_type = multipart(
        "another-boundary-1234",
        [("n", "1"), ("model", GPT_IMAGE)],
        [("image", "renamed.png", PHOTO, "image/png")],
    )
    reordered = body.replace(b"--another-boundary-1234--", b"").rstrip(b"\r\n") + b"\r\n"
    reordered += (
        b'--another-boundary-1234\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na scarf\r\n'
    )
    reordered += b"--another-boundary-1234--\r\n"
    second = await edit_raw(proxy, reordered, content_type)
    assert (first_cache, second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second.headers["X-Cache-Key"] == first_key
    assert second.body == first_body
    assert fake_upstream.state.calls["images_edits"] == 1


@pytest.mark.parametrize(
    ("fields", "files"),
    [
        pytest.param(
            [("prompt", "p")],
            [("image[]", "b.png", OTHER, "image/png"), ("image[]", "a.png", PHOTO, "image/png")],
            id="image-order",
        ),
        pytest.param(
            [("prompt", "p")],
            [("image[]", "a.png", PHOTO, "image/jpeg"), ("image[]", "b.png", OTHER, "image/png")],
            id="content-type",
        ),
        pytest.param(
            [("prompt", "p"), ("size", "1536x1024")],
            [("image[]", "a.png", PHOTO, "image/png"), ("image[]", "b.png", OTHER, "image/png")],
            id="a-field",
        ),
        pytest.param(
            [("prompt", "p")],
            [("image[]", "a.png", PHOTO, "image/png"), ("image[]", "b.png", PHOTO, "image/png")],
            id="file-bytes",
        ),
    ],
)
async def test_what_can_change_the_answer_changes_the_key(
    proxy: ProxyServer,
    fake_upstream: FakeUpstream,
    fields: list[tuple[str, str]],
    files: list[tuple[str, str, bytes, str]],
) -> None:
    """Another image order (the first image is the one edited), content type, field value or file
    content is another entry; another file name is not."""
    base_fields = [("prompt", "p")]
    base_files = [("image[]", "a.png", PHOTO, "image/png"), ("image[]", "b.png", OTHER, "image/png")]
    base = await edit_raw(proxy, *multipart("b0", base_fields, base_files))
    renamed = await edit_raw(
        proxy, *multipart("b1", base_fields, [(n, "x" + f, d, t) for n, f, d, t in base_files])
    )
    changed = await edit_raw(proxy, *multipart("b2", fields, files))
    assert [r.headers["X-Cache"] for r in (base, renamed, changed)] == ["MISS", "HIT", "MISS"]


async def test_the_upstream_receives_the_exact_bytes_and_boundary(redis_url: str, key_prefix: str) -> None:
    """A miss forwards the multipart body byte for byte with its Content-Type (same boundary)."""
    answer = {"created": 1, "data": [{"b64_json": base64.b64encode(make_png("answer", 4000)).decode()}]}

    def reply(_request: Received) -> bytes:
        return json_response(answer)

    body, content_type = multipart(
        "exact-boundary-42",
        [("prompt", "exact"), ("model", GPT_IMAGE)],
        [("image", "p.png", PHOTO, "image/png")],
    )
    async with (
        RawUpstream(reply) as upstream,
        ProxyServer(proxy_settings(upstream.url, redis_url, key_prefix)) as proxy,
    ):
        miss = await edit_raw(proxy, body, content_type)
        hit = await edit_raw(proxy, body, content_type)
    assert [miss.headers["X-Cache"], hit.headers["X-Cache"]] == ["MISS", "HIT"]
    (received,) = upstream.complete
    assert received.target == "/v1/images/edits"
    assert received.body == body
    assert received.header("content-type") == content_type
    assert hit.json() == answer


async def test_a_streamed_edit_is_relayed_then_replayed_from_the_cache(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """images.edit(stream=True, partial_images=1): the partial image and the completed one live,
    then a HIT replayed as one ``image_edit.completed`` event with the same PNG."""
    photo = ("photo.png", PHOTO, "image/png")
    async with async_client(proxy) as client:
        live = [
            e
            async for e in await client.images.edit(
                model=GPT_IMAGE, image=photo, prompt="s", stream=True, partial_images=1
            )
        ]
        again = [
            e
            async for e in await client.images.edit(
                model=GPT_IMAGE, image=photo, prompt="s", stream=True, partial_images=1
            )
        ]
    assert [e.type for e in live] == ["image_edit.partial_image", "image_edit.completed"]
    (replayed,) = again
    assert replayed.type == "image_edit.completed"
    assert replayed.b64_json == live[-1].b64_json
    assert fake_upstream.state.calls["images_edits"] == 1


async def test_identical_concurrent_edits_make_one_upstream_call(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """Six identical uploads at once: one upstream call, every client the same answer."""
    fake_upstream.state.image_latency_s = 0.5
    form = multipart(
        "crowd", [("prompt", "crowd"), ("model", GPT_IMAGE)], [("image", "p.png", PHOTO, "image/png")]
    )
    replies = await asyncio.gather(*(edit_raw(proxy, *form) for _ in range(6)))
    assert fake_upstream.state.calls["images_edits"] == 1
    assert [r.headers["X-Cache"] for r in replies].count("MISS") == 1
    assert len({r.body for r in replies}) == 1


async def test_two_bearers_never_share_an_edit(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """The same upload from two pass-through tenants: two upstream calls."""
    form = multipart("tenants", [("prompt", "t")], [("image", "p.png", PHOTO, "image/png")])
    replies = [await edit_raw(proxy, *form, api_key=key) for key in ("sk-one", "sk-two", "sk-one")]
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "MISS", "HIT"]
    assert fake_upstream.state.calls["images_edits"] == 2


IMAGE = ("image", "p.png", PHOTO, "image/png")


@pytest.mark.parametrize(
    ("body", "content_type", "param"),
    [
        pytest.param(b'{"prompt": "x"}', "application/json", None, id="json"),
        pytest.param(b"prompt=x", "application/x-www-form-urlencoded", None, id="urlencoded"),
        pytest.param(
            multipart("b", [("prompt", "x")], [IMAGE])[0], "multipart/form-data", None, id="no-boundary"
        ),
        pytest.param(*multipart("b", [("prompt", "x")], []), "image", id="no-image"),
        pytest.param(*multipart("b", [], [IMAGE]), "prompt", id="no-prompt"),
        pytest.param(*multipart("b", [("prompt", "")], [IMAGE]), "prompt", id="empty-prompt"),
        pytest.param(*multipart("b", [("prompt", "x"), ("image", "text")], []), "image", id="image-as-text"),
        pytest.param(*multipart("b", [("prompt", "x"), ("n", "0")], [IMAGE]), "n", id="n-zero"),
        pytest.param(*multipart("b", [("prompt", "x"), ("n", "eleven")], [IMAGE]), "n", id="n-word"),
        pytest.param(*multipart("b", [("prompt", "x"), ("n", "11")], [IMAGE]), "n", id="n-eleven"),
        pytest.param(
            *multipart("b", [("prompt", "x"), ("stream", "yes")], [IMAGE]), "stream", id="stream-yes"
        ),
        pytest.param(
            *multipart("b", [("prompt", "x"), ("model", "m" * 300)], [IMAGE]), "model", id="model-too-long"
        ),
        pytest.param(
            multipart("b", [("prompt", "x")], [IMAGE])[0][:-20],
            "multipart/form-data; boundary=b",
            None,
            id="truncated",
        ),
    ],
)
async def test_bad_edit_requests_are_400_and_not_forwarded(
    proxy: ProxyServer, fake_upstream: FakeUpstream, body: bytes, content_type: str, param: str | None
) -> None:
    """Not multipart, no boundary, a missing or empty image or prompt, a bad option or a broken
    body: 400 in OpenAI's shape, nothing forwarded."""
    reply = await edit_raw(proxy, body, content_type)
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"]
    assert fake_upstream.state.calls["images_edits"] == 0


async def test_sdk_edit_without_an_image_file_is_a_bad_request(proxy: ProxyServer) -> None:
    """The SDK's BadRequestError for an image sent as text (the proxy words it as OpenAI does)."""
    async with async_client(proxy) as client:
        with pytest.raises(openai.BadRequestError, match="'image'"):
            await client.images.edit(model=GPT_IMAGE, image=[], prompt="x")  # type: ignore[arg-type]


class Upload:
    """A multipart upload of ``total`` file bytes, counting what was produced so far."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total = total
        self.chunk = chunk
        self.produced = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """Sent chunked (no Content-Length), as a streaming client uploads."""
        yield b'--big\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nbig\r\n'
        yield b'--big\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'
        while self.produced < self.total:
            await asyncio.sleep(0.002)  # a client on a real link: the proxy reads as it arrives
            self.produced += self.chunk
            yield b"\x89" * self.chunk
        yield b"\r\n--big--\r\n"


LIMIT = 256 * 1024


async def test_a_chunked_upload_over_the_limit_is_refused_while_it_streams(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A chunked 32 MiB upload against a 256 KiB limit: 413 in OpenAI's shape long before the
    client has sent it all (the limit applies as the body arrives), and the upstream never sees
    a request."""
    upload = Upload(32 * 1024 * 1024)
    async with (
        ProxyServer(proxy_settings(fake_upstream.url, redis_url, key_prefix, max_body_bytes=LIMIT)) as proxy,
        aiohttp.ClientSession() as session,
        session.post(f"{proxy.url}/images/edits", data=upload.chunks(), headers=UPLOAD_HEADERS) as reply,
    ):
        status, body = reply.status, await reply.read()
        produced = upload.produced
    assert status == 413
    assert orjson.loads(body)["error"]["code"] == "request_too_large"
    assert produced < 16 * LIMIT, f"{produced} bytes sent before the 413"
    assert fake_upstream.state.calls["images_edits"] == 0


async def test_an_upload_whose_length_is_over_the_limit_is_413_unread(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A Content-Length over the limit: 413 before the body is read, nothing forwarded."""
    upload = Upload(512 * 1024)
    data = b"".join([chunk async for chunk in upload.chunks()])
    async with (
        ProxyServer(proxy_settings(fake_upstream.url, redis_url, key_prefix, max_body_bytes=LIMIT)) as proxy,
        aiohttp.ClientSession() as session,
        session.post(f"{proxy.url}/images/edits", data=data, headers=UPLOAD_HEADERS) as reply,
    ):
        status, body = reply.status, await reply.read()
    assert status == 413
    assert orjson.loads(body)["error"]["code"] == "request_too_large"
    assert fake_upstream.state.calls["images_edits"] == 0


UPLOAD_HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "multipart/form-data; boundary=big"}
