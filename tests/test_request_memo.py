"""The request memo (``proxy.pipeline.memo``) and the BLAKE3 key (``proxy.cache.keys``): a body seen
before skips parse and canonical hashing, without ever changing which entry a request maps to."""

from __future__ import annotations

import orjson
import pytest
from blake3 import blake3

from proxy.cache.keys import KEY_VERSION, cache_hash, canonical_request, entry_digest, request_digest
from proxy.endpoints.chat import ChatCompletions
from proxy.endpoints.image_edits import ImageEdits
from proxy.errors import ProxyError
from proxy.pipeline.memo import RequestMemo
from tests.images_helpers import multipart

CHAT = ChatCompletions()
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
RAW = orjson.dumps(BODY)


def test_the_key_is_blake3_over_version_namespace_scope_and_the_request_digest() -> None:
    """The key's construction, spelled out: a change of it must be deliberate (a new KEY_VERSION)."""
    inner = blake3(canonical_request(BODY)).digest()
    assert KEY_VERSION == "v2"
    assert request_digest(BODY) == inner
    expected = blake3(b"v2\x00ns\x00scope\x00" + inner).hexdigest()
    assert entry_digest(inner, "ns", "scope") == expected == cache_hash(BODY, "ns", "scope")
    assert len(expected) == 64  # X-Cache-Key stays 64 hex characters
    assert set(expected) <= set("0123456789abcdef")


def test_namespace_and_scope_are_separated_in_the_key() -> None:
    """Moving characters between namespace and scope changes the key (the NUL separators)."""
    inner = request_digest(BODY)
    assert entry_digest(inner, "ab", "c") != entry_digest(inner, "a", "bc")
    assert entry_digest(inner, "ns", "") != entry_digest(inner, "ns", "images.generations")


def test_a_byte_identical_body_gets_the_remembered_parse() -> None:
    """Second time, the same bytes give the very same Parsed object and the same request digest."""
    memo = RequestMemo()
    first, digest = memo.identify(CHAT, RAW, "application/json")
    again, digest_again = memo.identify(CHAT, bytes(RAW), "application/json")
    assert again is first
    assert digest_again == digest == request_digest(CHAT.key_fields(first))
    assert len(memo) == 1


def test_the_same_request_spelled_differently_is_parsed_but_keyed_the_same() -> None:
    """Reordered fields and whitespace are other bytes (parsed again) but the same request digest."""
    memo = RequestMemo()
    parsed, digest = memo.identify(CHAT, RAW, "application/json")
    respelled = orjson.dumps(dict(reversed(BODY.items())), option=orjson.OPT_INDENT_2)
    other, other_digest = memo.identify(CHAT, respelled, "application/json")
    assert other is not parsed
    assert other_digest == digest
    assert len(memo) == 2


@pytest.mark.parametrize("size", [4_000, 400_000])  # keyed by the body itself, then by its BLAKE3
def test_one_changed_byte_of_a_data_url_changes_the_digest(size: int) -> None:
    """A body differing in one base64 character of an input image is a different request, and
    both are remembered apart, whether the memo keys them by their bytes or by their digest."""
    url = "data:image/png;base64," + "A" * size

    def raw(data_url: str) -> bytes:
        part = {"type": "image_url", "image_url": {"url": data_url}}
        return orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": [part]}]})

    memo = RequestMemo()
    _, digest = memo.identify(CHAT, raw(url), "application/json")
    changed = url[:-100] + "B" + url[-99:]
    _, changed_digest = memo.identify(CHAT, raw(changed), "application/json")
    assert changed_digest != digest
    assert memo.identify(CHAT, raw(url), "application/json")[1] == digest
    assert len(memo) == 2


def test_a_refused_body_is_refused_every_time_and_not_remembered() -> None:
    """Only successful parses are kept: a bad body gets its 400 again, from the endpoint itself."""
    memo = RequestMemo()
    bad = orjson.dumps({"model": "gpt-4o-mini", "messages": "not a list"})
    for _ in range(2):
        with pytest.raises(ProxyError) as refused:
            memo.identify(CHAT, bad, "application/json")
        assert refused.value.status == 400
    assert len(memo) == 0


def test_the_whole_content_type_is_part_of_the_memo_key() -> None:
    """A multipart form's boundary is in its Content-Type: the same bytes under another boundary are
    parsed again (and refused: they are not a form with that boundary)."""
    edits = ImageEdits()
    memo = RequestMemo()
    body, content_type = multipart(
        "one",
        [("prompt", "a hat"), ("model", "gpt-image-1")],
        [("image", "a.png", b"\x89PNG first", "image/png")],
    )
    memo.identify(edits, body, content_type)
    with pytest.raises(ProxyError):
        memo.identify(edits, body, content_type.replace("one", "two"))
    assert len(memo) == 1


def test_the_memo_is_bounded_in_bytes() -> None:
    """Least recently used bodies leave past the bound; a body over a quarter of it is never kept."""
    memo = RequestMemo(max_bytes=64 * 1024)
    raws = [
        orjson.dumps({**BODY, "messages": [{"role": "user", "content": f"{i} " + "x" * 2000}]})
        for i in range(40)
    ]
    for raw in raws:
        memo.identify(CHAT, raw, "application/json")
    assert 0 < len(memo) < len(raws)
    first, _ = memo.identify(CHAT, raws[0], "application/json")
    assert memo.identify(CHAT, raws[0], "application/json")[0] is first  # back in, most recent
    big = orjson.dumps({**BODY, "messages": [{"role": "user", "content": "y" * 10_000}]})
    parsed, _ = memo.identify(CHAT, big, "application/json")
    assert memo.identify(CHAT, big, "application/json")[0] is not parsed


def test_the_remembered_entry_digest_is_the_entry_digest_per_namespace_and_scope() -> None:
    """The memo's entry digest is exactly ``entry_digest``, per namespace and scope (a tenant never
    gets another tenant's key from it)."""
    memo = RequestMemo()
    _, inner = memo.identify(CHAT, RAW, "application/json")
    for namespace, scope in [("k-a", ""), ("k-b", ""), ("k-a", "images.generations"), ("k-a", "")]:
        assert memo.entry_digest(inner, namespace, scope) == entry_digest(inner, namespace, scope)
    assert memo.entry_digest(inner, "k-a", "") != memo.entry_digest(inner, "k-b", "")
