"""Taking an embeddings answer apart per item and merging item answers again (pure functions)."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.endpoints.embedding_answer import apportion, merged_answer, read_embeddings

# One answer as an upstream could write it: floats spelt three ways, keys in another order,
# data out of index order, whitespace everywhere, a non-ASCII model name before the data.
ODD = (
    '{ "model" : "modèle-3" ,\n "data": [\n'
    '  {"embedding": [1e-1, 0.10, -0.0, 5], "index": 1, "object": "embedding"},\n'
    '  {"object": "embedding", "index": 0, "embedding": [ 0.5 ,-2E+3 ]}\n'
    ' ],\n "usage": {"prompt_tokens": 7, "total_tokens": 7}, "object": "list" }\n'
).encode()


def test_each_embedding_is_kept_as_the_exact_bytes_sent() -> None:
    """Spans are the upstream's own text (no float is re-encoded), ordered by ``index``; the model
    and usage are read; a non-ASCII character before the data does not shift them."""
    answer = read_embeddings(ODD, 2, [3, 4])
    assert answer.values == (b"[ 0.5 ,-2E+3 ]", b"[1e-1, 0.10, -0.0, 5]")
    assert answer.model == "modèle-3"
    assert answer.usage == {"prompt_tokens": 7, "total_tokens": 7}
    assert answer.tokens == (3, 4)


def test_base64_embeddings_are_kept_as_their_json_string() -> None:
    """A base64 embedding is a JSON string: kept with its quotes, escapes as sent."""
    raw = b'{"data":[{"index":0,"embedding":"AAAA\\/w=="}],"model":"m","usage":{"prompt_tokens":2}}'
    answer = read_embeddings(raw, 1, [9])
    assert answer.values == (b'"AAAA\\/w=="',)
    assert answer.tokens == (2,)  # one item: exactly what the upstream billed


@pytest.mark.parametrize(
    ("raw", "count"),
    [
        pytest.param(b'{"data":[{"index":0,"embedding":[1]}]}', 2, id="too-few"),
        pytest.param(
            b'{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[2]}]}', 2, id="same-index"
        ),
        pytest.param(b'{"data":[{"index":true,"embedding":[1]}]}', 1, id="bool-index"),
        pytest.param(b'{"data":[{"index":0}]}', 1, id="no-embedding"),
        pytest.param(b'{"data":[{"index":0,"embedding":null}]}', 1, id="null"),
        pytest.param(b'{"data":[{"index":0,"embedding":[]}]}', 1, id="empty"),
        pytest.param(b'{"data":[{"index":0,"embedding":["1"]}]}', 1, id="strings"),
        pytest.param(b'{"data":[{"index":0,"embedding":[NaN]}]}', 1, id="nan"),
        pytest.param(b'{"data":[{"index":0,"embedding":[1]}]} x', 1, id="trailing"),
        pytest.param(b'{"data":{"index":0}}', 1, id="data-object"),
        pytest.param(b'{"data":[[1]]}', 1, id="item-array"),
        pytest.param(b"[]", 1, id="array"),
        pytest.param(b'{"data":[{"index":0,"embedding":[1]}', 1, id="cut"),
        pytest.param(b'{"data":[{"index":0 "embedding":[1]}]}', 1, id="no-comma"),
        pytest.param(b'{"data":[{"index":0,"embedding":[1]}]}\xff', 1, id="not-utf8"),
    ],
)
def test_answers_that_cannot_be_taken_apart_raise(raw: bytes, count: int) -> None:
    """Anything but one vector per requested index is a ValueError (never stored)."""
    with pytest.raises(ValueError):
        read_embeddings(raw, count, [1] * count)


vectors = st.lists(
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=8),
    min_size=1,
    max_size=6,
)


@given(vectors, st.sampled_from([None, 1, 2]), st.booleans())
def test_spans_parse_back_to_the_vectors_for_any_formatting(
    found: list[list[float]], indent: int | None, reverse: bool
) -> None:
    """Whatever the serialiser's layout and item order, each span is a slice of the answer that
    parses to exactly that item's vector."""
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(found)]
    doc = {"object": "list", "data": data[::-1] if reverse else data, "model": "m"}
    raw = json.dumps(doc, indent=indent).encode()
    answer = read_embeddings(raw, len(found), [1] * len(found))
    for value, vector in zip(answer.values, found, strict=True):
        assert value in raw
        assert json.loads(value) == vector


@given(st.integers(0, 10**6), st.lists(st.integers(0, 10**4), min_size=1, max_size=50))
def test_apportion_sums_to_the_total_and_follows_the_weights(total: int, weights: list[int]) -> None:
    """Shares add up to the billed total, each within one token of its exact proportion."""
    shares = apportion(total, weights)
    assert sum(shares) == total
    whole = sum(weights) or len(weights)
    for share, weight in zip(shares, weights if sum(weights) else [1] * len(weights), strict=True):
        assert abs(share - Fraction(total * weight, whole)) < 1


def test_apportion_of_token_arrays_is_exact() -> None:
    """Token arrays bill their length: a total equal to the lengths' sum splits back exactly."""
    assert apportion(10, [1, 2, 3, 4]) == [1, 2, 3, 4]
    assert apportion(0, [5, 5]) == [0, 0]


def test_merged_answer_splices_the_bytes_in_order() -> None:
    """The merged answer is a CreateEmbeddingResponse with each value's bytes at its index."""
    values = [b"[1e-1,2]", b'"AAAA"', b"[1e-1,2]"]
    raw = merged_answer(values, "text-embedding-3-small", 5)
    doc: dict[str, Any] = orjson.loads(raw)
    assert doc == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.1, 2]},
            {"object": "embedding", "index": 1, "embedding": "AAAA"},
            {"object": "embedding", "index": 2, "embedding": [0.1, 2]},
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }
    assert read_embeddings(raw, 3, [1, 1, 1]).values == tuple(values)
