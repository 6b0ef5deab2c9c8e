"""The simulated `/v1/embeddings` driven with the openai SDK: input forms, encodings, dimensions."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import openai
import pytest
from openai.types import CreateEmbeddingResponse, Embedding

from proxy.sim.embeddings import DIMENSIONS
from tests.fake_upstream import FakeUpstream
from tests.sim_clients import assert_openai_error, sdk_fixture, small_upstream_fixture

upstream = pytest.fixture(small_upstream_fixture)
client = pytest.fixture(sdk_fixture)

SMALL = "text-embedding-3-small"


def vectors(answer: CreateEmbeddingResponse) -> list[list[float]]:
    assert all(isinstance(item, Embedding) and item.object == "embedding" for item in answer.data)
    assert [item.index for item in answer.data] == list(range(len(answer.data)))
    return [list(item.embedding) for item in answer.data]


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(value * value for value in vector))


@pytest.mark.parametrize(
    ("given", "items", "tokens"),
    [
        pytest.param("hello world", ["hello world"], 2, id="string"),
        pytest.param(["alpha", "beta gamma"], ["alpha", "beta gamma"], 1 + 2, id="strings"),
        pytest.param([15339, 1917], [[15339, 1917]], 2, id="token-array"),
        pytest.param([[1, 2, 3], [4]], [[1, 2, 3], [4]], 4, id="token-arrays"),
    ],
)
async def test_every_input_form_gets_one_unit_vector_per_item(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, given: Any, items: list[Any], tokens: int
) -> None:
    """String, strings, token array and token arrays: one normalised vector per item, in order,
    the same vector the item gets alone; usage counts every item's tokens."""
    answer = await client.embeddings.create(model=SMALL, input=given, encoding_format="float")
    assert (answer.object, answer.model) == ("list", SMALL)
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (tokens, tokens)
    found = vectors(answer)
    assert len(found) == len(items)
    for item, vector in zip(items, found, strict=True):
        assert len(vector) == DIMENSIONS[SMALL]
        assert norm(vector) == pytest.approx(1.0, abs=1e-5)
        alone = await client.embeddings.create(model=SMALL, input=[item], encoding_format="float")
        assert vectors(alone) == [vector]
    assert upstream.state.requests["embeddings"][0] == {
        "model": SMALL,
        "input": given,
        "encoding_format": "float",
    }


async def test_vectors_depend_on_item_and_model_only(client: openai.AsyncOpenAI) -> None:
    """An item's vector is the same at any position of any batch; other items and models differ."""
    batch = vectors(
        await client.embeddings.create(model=SMALL, input=["a", "b", "c"], encoding_format="float")
    )
    shuffled = vectors(
        await client.embeddings.create(model=SMALL, input=["c", "x", "a"], encoding_format="float")
    )
    assert shuffled[0] == batch[2]
    assert shuffled[2] == batch[0]
    assert shuffled[1] not in batch
    large = vectors(
        await client.embeddings.create(model="text-embedding-3-large", input="a", encoding_format="float")
    )
    assert len(large[0]) == 3072
    assert large[0][:1536] != batch[0]


async def test_base64_is_little_endian_float32_of_the_same_values(client: openai.AsyncOpenAI) -> None:
    """encoding_format=base64 carries the float answer's values as LE float32; the SDK's default
    (it asks for base64 and decodes) yields exactly the float answer."""
    floats = vectors(
        await client.embeddings.create(model=SMALL, input=["one", "two"], encoding_format="float")
    )
    raw = await client.embeddings.create(model=SMALL, input=["one", "two"], encoding_format="base64")
    for item, expected in zip(raw.data, floats, strict=True):
        encoded = item.embedding
        assert isinstance(encoded, str)
        packed = base64.b64decode(encoded)
        assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == expected
    assert vectors(await client.embeddings.create(model=SMALL, input=["one", "two"])) == floats


async def test_dimensions_truncate_and_renormalise(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """dimensions=d: the first d values of the full vector, scaled back to unit length."""
    (full,) = vectors(await client.embeddings.create(model=SMALL, input="cut me", encoding_format="float"))
    for dimensions in (1, 8, 256):
        (short,) = vectors(
            await client.embeddings.create(
                model=SMALL, input="cut me", dimensions=dimensions, encoding_format="float"
            )
        )
        assert len(short) == dimensions
        assert norm(short) == pytest.approx(1.0, abs=1e-5)
        scale = norm(full[:dimensions])
        assert short == pytest.approx([value / scale for value in full[:dimensions]], rel=1e-5, abs=1e-6)
    (via_base64,) = vectors(await client.embeddings.create(model=SMALL, input="cut me", dimensions=8))
    assert len(via_base64) == 8
    assert upstream.state.requests["embeddings"][-1] == {
        "model": SMALL,
        "input": "cut me",
        "dimensions": 8,
        "encoding_format": "base64",
    }


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        pytest.param({"model": SMALL, "input": ""}, None, None, id="empty-string"),
        pytest.param({"model": SMALL, "input": ["a", ""]}, None, None, id="empty-item"),
        pytest.param({"model": SMALL, "input": []}, None, None, id="empty-list"),
        pytest.param({"model": SMALL, "input": [[1], []]}, None, None, id="empty-token-array"),
        pytest.param({"model": SMALL, "input": ["a", [1]]}, None, None, id="mixed"),
        pytest.param({"model": SMALL, "input": [1, -2]}, None, None, id="negative-token"),
        pytest.param({"model": SMALL, "input": [True]}, None, None, id="bool-token"),
        pytest.param({"model": SMALL, "input": {"text": "a"}}, None, None, id="object"),
        pytest.param({"model": SMALL, "input": ["a"] * 2049}, None, None, id="2049-items"),
        pytest.param({"model": SMALL}, "input", "missing_required_parameter", id="no-input"),
        pytest.param({"input": "a"}, "model", "missing_required_parameter", id="no-model"),
        pytest.param(
            {"model": SMALL, "input": "a", "encoding_format": "hex"},
            "encoding_format",
            "invalid_value",
            id="enc",
        ),
        pytest.param(
            {"model": SMALL, "input": "a", "dimensions": 0}, "dimensions", "integer_below_min_value", id="d0"
        ),
        pytest.param(
            {"model": SMALL, "input": "a", "dimensions": 1537},
            "dimensions",
            "integer_above_max_value",
            id="d+",
        ),
        pytest.param(
            {"model": "text-embedding-ada-002", "input": "a", "dimensions": 8}, "dimensions", None, id="ada-d"
        ),
        pytest.param(
            {"model": SMALL, "input": "a" * 40_000}, None, "context_length_exceeded", id="long-item"
        ),
        pytest.param(
            {"model": SMALL, "input": ["a" * 32_000] * 40}, None, "max_tokens_per_request", id="batch"
        ),
        pytest.param({"model": SMALL, "input": "a", "user": 7}, "user", "invalid_type", id="user"),
    ],
)
async def test_bad_embedding_requests_are_400(
    client: openai.AsyncOpenAI,
    upstream: FakeUpstream,
    body: dict[str, Any],
    param: str | None,
    code: str | None,
) -> None:
    """Malformed input, options and over-long items are 400s in OpenAI's shape (BadRequestError)."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.post("/embeddings", body=body, cast_to=CreateEmbeddingResponse)
    message = assert_openai_error({"error": caught.value.body}, param=param, code=code)
    if param is None and code is None:
        assert message.startswith("'$.input' is invalid.")
    assert upstream.state.requests["embeddings"] == [body]


async def test_unknown_model_is_404(client: openai.AsyncOpenAI) -> None:
    """A model that is not an embedding model: OpenAI's 404 model_not_found (NotFoundError)."""
    with pytest.raises(openai.NotFoundError) as caught:
        await client.embeddings.create(model="gpt-4o-mini", input="a")
    assert_openai_error({"error": caught.value.body}, param=None, code="model_not_found")


async def test_latency_and_fail_next_apply(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    """A queued 429 answers the next embeddings call, then calls succeed again; all are counted."""
    error = {"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}
    upstream.state.fail_next.append((429, error))
    with pytest.raises(openai.RateLimitError):
        await client.embeddings.create(model=SMALL, input="a")
    assert len((await client.embeddings.create(model=SMALL, input="a")).data) == 1
    assert upstream.state.calls["embeddings"] == 2
