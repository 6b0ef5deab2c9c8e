"""Cache-key canonicalisation (``proxy.cache.keys``): what changes the key and what must not."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pybase64
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from proxy.cache.keys import (
    IGNORED_FIELDS,
    bearer_namespace,
    cache_hash,
    canonical_request,
    safe_namespace,
)
from proxy.endpoints.chat import FIELD_TYPES, parse_chat_body
from tests.e2e_helpers import chat_body, chat_raw
from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer

PROPERTY = settings(max_examples=150, deadline=None, database=None)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant"]), "content": st.text(max_size=40)}
    ),
    min_size=1,
    max_size=3,
)
extras = st.dictionaries(
    st.text(min_size=1, max_size=10).filter(
        # Known fields have types the proxy enforces (400 otherwise); extras are the unknown ones.
        lambda k: k not in IGNORED_FIELDS and k not in FIELD_TYPES
    ),
    json_values,
    max_size=4,
)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A chat request body with arbitrary extra parameters."""
    body: dict[str, Any] = {"model": draw(st.text(min_size=1, max_size=12)), "messages": draw(messages)}
    body.update(draw(extras))
    return body


def reordered(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse insertion order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


def as_floats(value: Any) -> Any:
    """The same JSON value with small ints written as floats (``1`` -> ``1.0``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) < 2**53:
        return float(value)
    if isinstance(value, dict):
        return {key: as_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_floats(item) for item in value]
    return value


@PROPERTY
@given(bodies())
def test_key_order_does_not_change_the_key(body: dict[str, Any]) -> None:
    """Object key order, at any depth, does not change the key."""
    assert cache_hash(reordered(body), "ns") == cache_hash(body, "ns")


@PROPERTY
@given(bodies(), st.sampled_from([None, 1, 2, 4]))
def test_json_whitespace_does_not_change_the_key(body: dict[str, Any], indent: int | None) -> None:
    """The same request sent compact or pretty-printed gets the same key."""
    compact = orjson.dumps(body)
    pretty = json.dumps(body, indent=indent, separators=(" , ", " : ")).encode()
    assert cache_hash(parse_chat_body(pretty), "") == cache_hash(parse_chat_body(compact), "")


@PROPERTY
@given(bodies(), st.dictionaries(st.sampled_from(sorted(IGNORED_FIELDS)), json_values, min_size=1))
def test_ignored_fields_do_not_change_the_key(body: dict[str, Any], ignored: dict[str, Any]) -> None:
    """stream, stream_options, user, metadata, store and service_tier never change the key."""
    assert cache_hash({**body, **ignored}, "ns") == cache_hash(body, "ns")


def test_every_ignored_field_is_listed() -> None:
    """The ignored set is exactly the documented one (adding a field there can make answers collide)."""
    assert {"stream", "stream_options", "user", "metadata", "store", "service_tier"} == IGNORED_FIELDS


@PROPERTY
@given(
    bodies(),
    st.sampled_from(
        ["model", "temperature", "seed", "max_tokens", "tools", "response_format", "x_unknown_param"]
    ),
    json_values,
    json_values,
)
def test_changed_output_affecting_field_changes_the_key(
    body: dict[str, Any], name: str, before: Any, after: Any
) -> None:
    """Any changed value of a field that affects the output (known or unknown) changes the key."""
    assume(before != after)
    assume(as_floats(before) != as_floats(after))
    assert cache_hash({**body, name: before}, "") != cache_hash({**body, name: after}, "")


@PROPERTY
@given(bodies(), st.sampled_from(["temperature", "seed", "max_tokens", "x_unknown_param"]), json_values)
def test_adding_a_field_changes_the_key(body: dict[str, Any], name: str, value: Any) -> None:
    """A request with an extra output-affecting parameter never shares the key of one without it."""
    assume(name not in body)
    assert cache_hash({**body, name: value}, "") != cache_hash(body, "")


@PROPERTY
@given(bodies(), json_values)
def test_integral_floats_equal_ints(body: dict[str, Any], value: Any) -> None:
    """``1`` and ``1.0`` (anywhere in the body) are the same request."""
    with_ints = {**body, "temperature": 1, "x_param": value}
    with_floats = {**body, "temperature": 1.0, "x_param": as_floats(value)}
    assert cache_hash(with_floats, "") == cache_hash(with_ints, "")


@PROPERTY
@given(
    st.binary(min_size=30, max_size=600),
    st.data(),
)
def test_one_changed_char_of_an_input_image_changes_the_key(png: bytes, data: st.DataObject) -> None:
    """A single changed base64 character of an inline input image changes the key."""
    encoded = pybase64.b64encode(png).decode()
    position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    replacement = data.draw(st.sampled_from(alphabet).filter(lambda c: c != encoded[position]))
    changed = encoded[:position] + replacement + encoded[position + 1 :]

    def with_image(payload: str) -> dict[str, Any]:
        part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{payload}"}}
        text = {"type": "text", "text": "describe this"}
        return {"model": "gpt-4o", "messages": [{"role": "user", "content": [text, part]}]}

    assert cache_hash(with_image(changed), "") != cache_hash(with_image(encoded), "")


@PROPERTY
@given(st.text(max_size=30), st.text(max_size=30))
def test_unicode_strings_are_kept_exact(one: str, two: str) -> None:
    """Strings enter the key exactly (no normalisation, no case folding): different text, different key."""
    body = chat_body(one)
    canonical = canonical_request(body)
    assert orjson.loads(canonical)["messages"][0]["content"] == one
    assume(one != two)
    assert cache_hash(chat_body(two), "") != cache_hash(body, "")


def test_unicode_normalisation_forms_are_different_requests() -> None:
    """NFC and NFD spellings of the same word are different prompts to the model, so different keys."""
    assert cache_hash(chat_body("caf\u00e9"), "") != cache_hash(chat_body("cafe\u0301"), "")
    assert "caf\u00e9".encode() in canonical_request(chat_body("caf\u00e9"))  # UTF-8, not \u-escaped


@PROPERTY
@given(bodies())
def test_canonical_form_is_sorted_compact_utf8(body: dict[str, Any]) -> None:
    """The canonical request is sorted-keys, whitespace-free JSON that parses back to the kept fields."""
    canonical = canonical_request(body)
    kept = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    assert orjson.loads(canonical) == orjson.loads(orjson.dumps(kept))
    reparsed = orjson.loads(canonical)
    assert orjson.dumps(reparsed, option=orjson.OPT_SORT_KEYS) == canonical


@PROPERTY
@given(bodies(), st.text(max_size=20), st.text(max_size=20))
def test_namespace_changes_the_key(body: dict[str, Any], one: str, two: str) -> None:
    """The same request in two namespaces has two keys."""
    assume(one != two)
    assert cache_hash(body, one) != cache_hash(body, two)


def test_integers_beyond_64_bits_are_keyed() -> None:
    """Huge integers (which orjson refuses) still give distinct, stable keys instead of crashing."""
    big = {**chat_body("x"), "seed": 2**70}
    assert cache_hash(big, "") == cache_hash(dict(big), "")
    assert cache_hash(big, "") != cache_hash({**big, "seed": 2**70 + 1}, "")


def test_key_is_a_sha256_hex_digest() -> None:
    """The key is 64 lowercase hex characters (it goes into Redis keys and the X-Cache-Key header)."""
    digest = cache_hash(chat_body("x"), "ns")
    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")


@PROPERTY
@given(st.text(min_size=1, max_size=200))
def test_namespaces_are_safe_and_distinct(raw: str) -> None:
    """safe_namespace keeps plain short names, hashes anything else, and never returns unsafe chars."""
    safe = safe_namespace(raw)
    assert safe
    assert len(safe) <= 64
    assert all(c.isascii() and (c.isalnum() or c in "._:-") for c in safe)
    assert safe_namespace(raw + "!") != safe


def test_bearer_namespace_hides_the_secret() -> None:
    """A tenant's namespace is derived from its key but never contains it."""
    space = bearer_namespace("sk-secret-value")
    assert "secret" not in space
    assert space == bearer_namespace("sk-secret-value")
    assert space != bearer_namespace("sk-secret-valuf")


async def test_reformatted_request_hits_the_same_entry(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """Over HTTP, the same request with other key order, whitespace and 1.0 for 1 hits the first entry."""
    body = chat_body("a small boat", temperature=1, seed=3)
    first = await chat_raw(proxy, orjson.dumps(body))
    pretty = json.dumps(reordered({**body, "temperature": 1.0}), indent=4).encode()
    second = await chat_raw(proxy, pretty)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second.headers["X-Cache-Key"] == first.headers["X-Cache-Key"]
    assert second.body == first.body
    assert fake_upstream.chat_calls == 1
