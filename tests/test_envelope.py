"""The stored-entry format (``proxy.cache.entry``): images cut out as blobs, rebuilt byte for byte."""

from __future__ import annotations

import contextlib
import hashlib
import struct
from typing import Any

import orjson
import pybase64
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cache.entry import (
    MAGIC,
    MIN_BLOB_BYTES,
    BlobRef,
    EntryMeta,
    SplitResponse,
    decode_entry,
    encode_entry,
    rebuild_parts,
    split_response,
)
from proxy.endpoints.chat import ChatCompletions, image_urls

CHAT = ChatCompletions()
PROPERTY = settings(max_examples=120, deadline=None, database=None)
PREFIX = "data:image/png;base64,"

images = st.one_of(
    st.binary(min_size=MIN_BLOB_BYTES, max_size=4096),  # cut out as a blob
    st.binary(min_size=0, max_size=200),  # small: stays inline
)
extra_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


def image_part(png: bytes) -> dict[str, Any]:
    """One ``message.images[]`` item as image models return it."""
    return {"type": "image_url", "image_url": {"url": PREFIX + pybase64.b64encode(png).decode()}}


@st.composite
def responses(draw: st.DrawFn) -> dict[str, Any]:
    """A chat completion with 1-2 choices, 0..3 images in total, unicode text and extra fields."""
    pngs = draw(st.lists(images, max_size=3))
    choices = []
    for index in range(draw(st.integers(1, 2))):
        mine = pngs if index == 0 else []
        message: dict[str, Any] = {"role": "assistant", "content": draw(st.text(max_size=60))}
        if mine:
            message["images"] = [image_part(png) for png in mine]
        choices.append({"index": index, "message": message, "finish_reason": "stop"})
    doc: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "choices": choices}
    doc.update(
        draw(
            st.dictionaries(st.text(min_size=1, max_size=6).map(lambda k: "x_" + k), extra_values, max_size=3)
        )
    )
    doc["usage"] = {"prompt_tokens": 3, "completion_tokens": 1290, "total_tokens": 1293}
    return doc


def rebuilt(split: SplitResponse) -> bytes:
    """The response bytes rebuilt from a split, blobs in reference order."""
    return b"".join(rebuild_parts(split.template, split.refs, [split.blobs[r.sha256] for r in split.refs]))


def meta_of(split: SplitResponse) -> EntryMeta:
    """Meta for a split (values beside the blob references are arbitrary)."""
    return EntryMeta(created=1.5, model="m", prompt_tokens=1, completion_tokens=2, images=3, blobs=split.refs)


@PROPERTY
@given(responses(), st.sampled_from([0, orjson.OPT_INDENT_2]))
def test_split_and_rebuild_is_byte_identical(doc: dict[str, Any], option: int) -> None:
    """For any response with 0..3 images, split + store + rebuild returns the exact original bytes."""
    raw = orjson.dumps(doc, option=option)
    split = split_response(raw, doc, CHAT.blob_slots)
    assert rebuilt(split) == raw
    meta, template = decode_entry(encode_entry(meta_of(split), split.template))
    assert meta == meta_of(split)
    assert b"".join(rebuild_parts(template, meta.blobs, [split.blobs[r.sha256] for r in meta.blobs])) == raw
    pngs = [_png_of(url) for url in image_urls(doc)]
    large = [png for png in pngs if len(pybase64.b64encode(png)) + 8 >= MIN_BLOB_BYTES]
    assert len(split.refs) == len(large)
    assert set(split.blobs) == {hashlib.sha256(png).hexdigest() for png in large}
    assert all(split.blobs[r.sha256] == png for r, png in zip(split.refs, large, strict=True))
    saved = sum(len(pybase64.b64encode(png)) for png in large)
    assert len(split.template) == len(raw) - saved


def _png_of(url: str) -> bytes:
    return pybase64.b64decode(url[len(PREFIX) :])


def test_same_image_twice_is_one_blob() -> None:
    """The same PNG in two places of one response is stored once and spliced back twice."""
    png = bytes(range(256)) * 20
    doc = {
        "choices": [
            {"index": 0, "message": {"images": [image_part(png), image_part(png)]}, "finish_reason": "stop"}
        ]
    }
    raw = orjson.dumps(doc)
    split = split_response(raw, doc, CHAT.blob_slots)
    assert len(split.refs) == 2
    assert list(split.blobs) == [hashlib.sha256(png).hexdigest()]
    assert rebuilt(split) == raw


def test_non_canonical_base64_stays_inline() -> None:
    """A payload whose re-encoding differs (non-zero padding bits) is kept as text, not as a blob."""
    png = b"\x89PNG" * 400  # length % 3 == 1: ends in "xy==" where y's low 4 bits are padding
    canonical = pybase64.b64encode(png).decode()
    assert canonical.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sloppy = canonical[:-3] + alphabet[alphabet.index(canonical[-3]) | 1] + "=="  # padding bit set
    assert sloppy != canonical
    assert pybase64.b64decode(sloppy) == png
    doc = {
        "choices": [
            {"message": {"images": [{"image_url": {"url": PREFIX + sloppy}}]}, "finish_reason": "stop"}
        ]
    }
    raw = orjson.dumps(doc)
    split = split_response(raw, doc, CHAT.blob_slots)
    assert split.refs == ()
    assert split.template == raw


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda b64: b64[:500] + "\n" + b64[500:], id="line-break"),
        pytest.param(lambda b64: b64 + "!", id="bad-char"),
        pytest.param(lambda b64: b64[:-1], id="truncated"),
    ],
)
def test_invalid_base64_stays_inline(payload: Any) -> None:
    """Payloads that are not strict base64 are never decoded into blobs."""
    text = payload(pybase64.b64encode(b"\x00\x01" * 1500).decode())
    doc = {
        "choices": [{"message": {"images": [{"image_url": {"url": PREFIX + text}}]}, "finish_reason": "stop"}]
    }
    raw = orjson.dumps(doc)
    split = split_response(raw, doc, CHAT.blob_slots)
    assert split.refs == ()
    assert rebuilt(split) == raw


def test_escaped_slashes_stay_inline() -> None:
    """A response whose JSON writes ``\\/`` (as some servers do) is kept whole and rebuilt exactly."""
    png = b"\xff\xfe\xfd" * 800  # base64 full of "/" characters
    doc = {"choices": [{"message": {"images": [image_part(png)]}, "finish_reason": "stop"}]}
    raw = orjson.dumps(doc).replace(b"/", b"\\/")
    assert orjson.loads(raw) == doc
    split = split_response(raw, doc, CHAT.blob_slots)
    assert split.refs == ()
    assert split.template == raw


def test_empty_payload_stays_inline_beside_a_cut_image() -> None:
    """An empty ``;base64,`` payload is just a short URL: the large image beside it is still cut out
    (its reference names its position, so the two can never be confused)."""
    doc = {
        "choices": [
            {
                "message": {"images": [image_part(b""), image_part(b"\x01" * 3000)]},
                "finish_reason": "stop",
            }
        ]
    }
    raw = orjson.dumps(doc)
    split = split_response(raw, doc, CHAT.blob_slots)
    assert [ref.position for ref in split.refs] == [(0, 1)]
    assert rebuilt(split) == raw


def test_image_urls_ignores_malformed_parts() -> None:
    """image_urls returns every string URL in order and skips shapes it does not understand."""
    doc = {
        "choices": [
            {"message": {"images": [{"image_url": {"url": "a"}}, "junk", {"image_url": {"url": 5}}]}},
            {"message": {"images": [{"image_url": "not an object"}]}},
            "junk",
            {"message": None},
            {"message": {"images": [{"image_url": {"url": "b"}}]}},
        ]
    }
    assert image_urls(doc) == ["a", "b"]


def _entry(header: bytes, template: bytes = b"{}") -> bytes:
    return struct.pack(">4sI", MAGIC, len(header)) + header + template


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"LCP", id="short"),
        pytest.param(b'{"id": "chatcmpl-1"}', id="plain-json"),
        pytest.param(b"XXXX\x00\x00\x00\x02{}", id="wrong-magic"),
        pytest.param(struct.pack(">4sI", MAGIC, 10_000) + b"{}", id="header-beyond-data"),
        pytest.param(_entry(b"not json"), id="header-not-json"),
        pytest.param(_entry(b"[1, 2]"), id="header-array"),
        pytest.param(_entry(b'{"c": 1}'), id="header-missing-fields"),
        pytest.param(_entry(b'{"c":"x","m":"m","p":1,"o":1,"i":0,"b":[]}'), id="header-bad-number"),
        pytest.param(_entry(b'{"c":1,"m":"m","p":1,"o":1,"i":0,"b":[[1,"s"]]}'), id="blob-ref-short"),
        pytest.param(_entry(b'{"c":1,"m":"m","p":1,"o":1,"i":1,"b":[[1,"s",3]]}'), id="blob-ref-lcp1-shape"),
        pytest.param(
            _entry(b'{"c":1,"m":"m","p":1,"o":1,"i":1,"b":[[99,"s",3,0,0]]}'), id="offset-beyond-template"
        ),
        pytest.param(_entry(b'{"c":1,"m":"m","p":1,"o":1,"i":1,"b":[[-1,"s",3,0,0]]}'), id="negative-offset"),
        pytest.param(_entry(b'{"c":1,"m":"m","p":1,"o":1,"i":1,"b":[[1,"s",3,-1,0]]}'), id="negative-choice"),
        pytest.param(
            _entry(b'{"c":1,"m":"m","p":1,"o":1,"i":2,"b":[[2,"s",3,0,0],[1,"t",3,0,1]]}', b"{}{}"),
            id="offsets-backwards",
        ),
    ],
)
def test_decode_entry_rejects_junk(data: bytes) -> None:
    """Anything that is not a well-formed entry raises ValueError (the cache drops it, never serves it)."""
    with pytest.raises(ValueError):
        decode_entry(data)


@PROPERTY
@given(st.binary(max_size=200))
def test_decode_entry_never_raises_anything_but_value_error(data: bytes) -> None:
    """Random bytes (with or without the magic) either decode or raise ValueError, nothing else."""
    for candidate in (data, MAGIC + data):
        with contextlib.suppress(ValueError):
            decode_entry(candidate)


def test_entry_meta_round_trips_with_and_without_expiry() -> None:
    """EntryMeta survives to_json/from_json, including an infinite expiry."""
    refs = (BlobRef(3, "ab" * 32, 1000, (0, 0)), BlobRef(9, "cd" * 32, 20, (1, 2)))
    meta = EntryMeta(12.5, "gemini", 3, 1290, 2, refs)
    assert EntryMeta.from_json(meta.to_json()) == meta
    assert EntryMeta.from_json(EntryMeta(1.0, "m", 0, 0, 0, (), expires=99.0).to_json()).expires == 99.0
