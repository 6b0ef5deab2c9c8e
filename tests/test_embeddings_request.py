"""The embeddings request as the proxy reads it (pure): items, item keys, demand, sub-requests."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.cache.keys import cache_hash
from proxy.endpoints.embeddings import Embeddings
from proxy.errors import ProxyError

EMBEDDINGS = Embeddings()
SMALL = "text-embedding-3-small"


def item_keys(body: dict[str, Any], namespace: str = "ns") -> list[str]:
    """The digest of every item of ``body``, as the batch flow computes them."""
    parsed = EMBEDDINGS.parse(orjson.dumps(body), "application/json")
    return [
        cache_hash(EMBEDDINGS.item_key_fields(parsed, item), namespace, EMBEDDINGS.key_scope)
        for item in EMBEDDINGS.split(parsed)
    ]


def test_an_item_has_one_key_whatever_form_carries_it() -> None:
    """A string alone or in a list, a token array alone or in a list: the same item; ``user`` and
    an explicit ``encoding_format: float`` change nothing."""
    (word,) = item_keys({"model": SMALL, "input": "word"})
    assert (
        item_keys({"model": SMALL, "input": ["x", "word"], "user": "u", "encoding_format": "float"})[1]
        == word
    )
    (tokens,) = item_keys({"model": SMALL, "input": [1, 2]})
    assert item_keys({"model": SMALL, "input": [[3], [1, 2]]})[1] == tokens


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"input": "[1, 2]"}, id="string-of-the-token-ids"),
        pytest.param({"input": "Word"}, id="other-text"),
        pytest.param({"encoding_format": "base64"}, id="base64"),
        pytest.param({"dimensions": 256}, id="dimensions"),
        pytest.param({"model": "text-embedding-3-large"}, id="model"),
        pytest.param({"x_unknown": True}, id="unknown-field"),
    ],
)
def test_anything_that_can_change_a_vector_makes_another_key(change: dict[str, Any]) -> None:
    """Every field but ``user`` is in an item's key, so no two different vectors share one."""
    base = {"model": SMALL, "input": "word"}
    assert item_keys({**base, **change}) != item_keys(base)
    assert item_keys(base, "other-tenant") != item_keys(base)


BODY = {"model": SMALL, "input": ["a", "b"], "dimensions": 8, "user": "u", "x": [1.0, "é"]}


@given(st.permutations(list(BODY.items())))
def test_an_items_key_does_not_depend_on_field_order(fields: list[tuple[str, Any]]) -> None:
    """Fields in any order: one key per item (canonical JSON with sorted keys)."""
    assert item_keys(dict(fields)) == item_keys(BODY)


def test_a_sub_request_keeps_every_other_field() -> None:
    """``subset`` replaces ``input`` only, every other field as sent, in the same order."""
    raw = b'{"model":"m","input":["a","b","c"],"dimensions":8,"x_other":{"k":[1,"\xc3\xa9"]}}'
    sub = EMBEDDINGS.subset(EMBEDDINGS.parse(raw, "application/json"), ["c", "a"])
    assert sub.raw == raw.replace(b'["a","b","c"]', b'["c","a"]')
    assert EMBEDDINGS.split(sub) == ["c", "a"]


def test_demand_bounds_the_items_tokens_and_is_not_boundable() -> None:
    """A token array bills its length; a string at most one token per 3 ASCII bytes."""
    parsed = EMBEDDINGS.parse(b'{"model":"m","input":[[1,2,3],[4]]}', "application/json")
    assert (EMBEDDINGS.demand(parsed).prompt_tokens, EMBEDDINGS.demand(parsed).boundable) == (4, False)
    parsed = EMBEDDINGS.parse(b'{"model":"m","input":["abcdef","g"]}', "application/json")
    assert EMBEDDINGS.demand(parsed).prompt_tokens == 2 + 1


def test_the_answer_bound_follows_model_dimensions_and_encoding() -> None:
    """Float text takes more than base64; ``dimensions`` and the model's native size count."""

    def bound(**body: Any) -> int:
        raw = orjson.dumps({"model": SMALL, "input": ["a", "b"], **body})
        return EMBEDDINGS.answer_bound(EMBEDDINGS.parse(raw, "application/json"))

    assert bound(encoding_format="base64") < bound() < bound(model="openai/text-embedding-3-large")
    assert bound(dimensions=8) < bound(dimensions=256) < bound()
    assert bound(model="unknown-embedder") == bound(model="text-embedding-3-large")
    assert bound() >= 2 * 1536 * 20  # real float answers take ~20 bytes per value


def test_parse_errors_are_proxy_400s() -> None:
    """A malformed body raises the 400 the error middleware renders."""
    with pytest.raises(ProxyError) as raised:
        EMBEDDINGS.parse(b'{"model": "m", "input": ["a", 1]}', "application/json")
    assert (raised.value.status, raised.value.param) == (400, "input")
