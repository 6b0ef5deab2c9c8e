"""The Images API endpoint objects on their own (pure): the multipart form and its key, the stream
fold and the replay."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from proxy.cache.keys import cache_hash
from proxy.endpoints.image_edits import ImageEdits
from proxy.endpoints.image_stream import ImageFold, replay_images
from proxy.endpoints.images import ImagesGenerations
from proxy.upstream.sse import SSEParser
from tests.images_helpers import multipart

EDITS = ImageEdits()
FIELDS = [
    ("prompt", "a hat"),
    ("model", "gpt-image-1"),
    ("n", "2"),
    ("size", "1024x1024"),
    ("quality", "low"),
]
FILES = [
    ("image[]", "a.png", b"\x89PNG first", "image/png"),
    ("image[]", "b.png", b"\x89PNG second", "image/png"),
]
BOUNDARY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=60)


def edit_digest(body: bytes, content_type: str) -> str:
    """The cache key of an edit form."""
    return cache_hash(EDITS.key_fields(EDITS.parse(body, content_type)), "ns", EDITS.key_scope)


@given(order=st.permutations(range(len(FIELDS) + 1)), boundary=BOUNDARY)
def test_the_edit_key_ignores_field_order_and_boundary(order: list[int], boundary: str) -> None:
    """Any order of the text fields around the files and any boundary: the same cache key."""
    reference = edit_digest(*multipart("reference", FIELDS, FILES))
    before = [FIELDS[i] for i in order if i < len(FIELDS)][: order.index(len(FIELDS))]
    after = [field for field in (FIELDS[i] for i in order if i < len(FIELDS)) if field not in before]
    head, content_type = multipart(boundary, before, FILES)
    tail, _ = multipart(boundary, after, [])
    body = head.removesuffix(f"--{boundary}--\r\n".encode()) + tail
    assert edit_digest(body, content_type) == reference


def test_a_preamble_and_an_epilogue_do_not_change_the_form() -> None:
    """RFC 2046 §5.1.1: text before the first boundary and after the last is ignored."""
    body, content_type = multipart("b", FIELDS, FILES)
    assert edit_digest(b"preamble\r\n" + body + b"epilogue", content_type) == edit_digest(body, content_type)


def test_the_form_keeps_file_digests_and_types_not_names() -> None:
    """Files are keyed by sha256 and declared type, in their order; names and the stream flag are
    not in the key."""
    body, content_type = multipart("b", [*FIELDS, ("stream", "true"), ("partial_images", "2")], FILES)
    parsed = EDITS.parse(body, content_type)
    assert parsed.stream
    key = EDITS.key_fields(parsed)
    assert set(key) == {"prompt", "model", "n", "size", "quality", "image[]"}
    assert [f["content_type"] for f in key["image[]"]] == ["image/png", "image/png"]
    assert "a.png" not in orjson.dumps(key).decode()


def test_generation_key_keeps_the_effective_safety_identifier() -> None:
    """``user`` and ``safety_identifier`` name the same echoed value: either gives the same key; a
    non-empty ``safety_identifier`` wins over ``user``."""
    generations = ImagesGenerations()

    def key(**extra: object) -> object:
        raw = orjson.dumps({"prompt": "p", "model": "gpt-image-1", **extra})
        return generations.key_fields(generations.parse(raw, "application/json"))

    assert key(user="u") == key(safety_identifier="u") == key(user="x", safety_identifier="u")
    assert key(user="") == key() == key(safety_identifier="", stream=True, partial_images=3)
    assert key(user="u") != key()


def completed(b64: str, **extra: object) -> bytes:
    """A ``image_generation.completed`` event as the upstream frames it."""
    event = {
        "type": "image_generation.completed",
        "b64_json": b64,
        "created_at": 7,
        "size": "1024x1024",
        **extra,
    }
    return b"event: image_generation.completed\ndata: " + orjson.dumps(event) + b"\n\n"


def test_the_fold_relays_partials_and_holds_back_the_last_completed_event() -> None:
    """Partial images and the first of two completed events go on; the second is held back (the
    relay sends it once stored); the document is the ``ImagesResponse`` of both images."""
    fold = ImageFold("image_generation", 2)
    partial_event = {"type": "image_generation.partial_image", "b64_json": "UA=="}
    partial = b"event: image_generation.partial_image\ndata: " + orjson.dumps(partial_event) + b"\n\n"
    stream = partial + completed("QQ==") + completed("Qg==", usage={"output_tokens": 2})
    sent = [fold.feed(event) for event in SSEParser().feed(stream)]
    assert sent[:2] == [partial, completed("QQ==")]
    assert sent[2] is None
    assert fold.done
    assert fold.end() == completed("Qg==", usage={"output_tokens": 2})
    assert fold.usage == {"output_tokens": 2}
    assert fold.document() == {
        "created": 7,
        "data": [{"b64_json": "QQ=="}, {"b64_json": "Qg=="}],
        "size": "1024x1024",
        "usage": {"output_tokens": 2},
    }


def test_the_fold_has_no_document_before_every_image_completed() -> None:
    """A stream cut after one of two images: no document, nothing to store."""
    fold = ImageFold("image_generation", 2)
    for event in SSEParser().feed(completed("QQ==")):
        fold.feed(event)
    assert not fold.done
    assert fold.document() is None
    assert fold.cut().startswith(b"event: error\ndata: ")


def test_replay_rewrites_each_image_object_in_place_into_its_completed_event() -> None:
    """The replay's events are the document's own image objects (the cache splices payloads by
    their identity), usage on the last one only."""
    doc = {
        "created": 3,
        "data": [{"b64_json": "", "revised_prompt": "p"}, {"b64_json": ""}],
        "quality": "low",
        "usage": {"x": 1},
    }
    images = list(doc["data"])
    events = list(replay_images(doc, "image_edit"))
    assert [e.data is image for e, image in zip(events, images, strict=True)] == [True, True]
    assert [e.name for e in events] == ["image_edit.completed"] * 2
    assert events[0].data == {
        "type": "image_edit.completed",
        "b64_json": "",
        "created_at": 3,
        "quality": "low",
    }
    assert events[1].data["usage"] == {"x": 1}
