"""``/v1/embeddings`` through the proxy with the openai SDK: cached per input item.

The simulator's vectors are a pure function of (model, item, dimensions), so what the proxy
answers can be compared item by item with a fresh answer, and what the upstream received is
recorded (``state.requests["embeddings"]``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.e2e_helpers import async_client
from tests.embedding_helpers import SMALL, direct_client, embed, floats, sent_inputs
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import admin, create_key, managed_proxy
from tests.proxy_harness import ProxyServer, proxy_settings


@pytest.fixture
async def client(proxy: ProxyServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """The SDK aimed at the proxy (pass-through bearer)."""
    async with async_client(proxy) as sdk:
        yield sdk


@pytest.fixture
async def direct(fake_upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    """The SDK aimed at the simulator itself: fresh, uncached answers."""
    async with direct_client(fake_upstream) as sdk:
        yield sdk


FORMS = [
    pytest.param("hello world", 1, id="string"),
    pytest.param(["alpha", "beta gamma delta"], 2, id="strings"),
    pytest.param([15339, 1917], 1, id="token-array"),
    pytest.param([[1, 2, 3], [4]], 2, id="token-arrays"),
]


@pytest.mark.parametrize("encoding", ["float", "base64"])
@pytest.mark.parametrize(("given", "count"), FORMS)
async def test_every_input_form_misses_then_hits_without_an_upstream_call(
    client: openai.AsyncOpenAI,
    direct: openai.AsyncOpenAI,
    fake_upstream: FakeUpstream,
    given: Any,
    count: int,
    encoding: str,
) -> None:
    """MISS (the request forwarded as sent) then HIT with no upstream call; every item's bytes are
    the first answer's, which are a fresh answer's; a hit bills nothing (usage 0)."""
    first = await embed(client, model=SMALL, input=given, encoding_format=encoding)
    second = await embed(client, model=SMALL, input=given, encoding_format=encoding)
    fresh = await embed(direct, model=SMALL, input=given, encoding_format=encoding)
    assert (first.cache, second.cache) == (("MISS", f"0/{count}"), ("HIT", f"{count}/{count}"))
    assert fake_upstream.state.requests["embeddings"][0] == {
        "model": SMALL,
        "input": given,
        "encoding_format": encoding,
    }
    assert fake_upstream.state.calls["embeddings"] == 2  # the proxy's miss and the direct call
    assert second.item_bytes() == first.item_bytes() == fresh.item_bytes()
    assert second.vectors() == first.vectors() == fresh.vectors()
    assert second.answer.model == SMALL
    assert first.answer.usage == fresh.answer.usage
    assert (second.answer.usage.prompt_tokens, second.answer.usage.total_tokens) == (0, 0)
    assert ("x-cache-key" in second.headers) == (count == 1)


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_dimensions_and_encoding_are_part_of_an_items_key(
    client: openai.AsyncOpenAI, fake_upstream: FakeUpstream, encoding: str
) -> None:
    """``dimensions=256`` is its own item: a full-size hit never serves it, nor it a full-size
    request; the other encoding is its own item too; each then hits."""
    full = await embed(client, model=SMALL, input="cut me", encoding_format=encoding)
    short = await embed(client, model=SMALL, input="cut me", encoding_format=encoding, dimensions=256)
    other = "base64" if encoding == "float" else "float"
    recoded = await embed(client, model=SMALL, input="cut me", encoding_format=other)
    assert [r.cache[0] for r in (full, short, recoded)] == ["MISS", "MISS", "MISS"]
    assert (len(floats(full.vectors()[0])), len(floats(short.vectors()[0]))) == (1536, 256)
    assert floats(recoded.vectors()[0]) == floats(full.vectors()[0])
    again = [
        await embed(client, model=SMALL, input="cut me", encoding_format=encoding),
        await embed(client, model=SMALL, input="cut me", encoding_format=encoding, dimensions=256),
        await embed(client, model=SMALL, input="cut me", encoding_format=other),
    ]
    assert [r.cache[0] for r in again] == ["HIT", "HIT", "HIT"]
    assert [len(floats(r.vectors()[0])) for r in again] == [1536, 256, 1536]
    assert fake_upstream.state.calls["embeddings"] == 3


async def test_the_sdk_default_encoding_is_cached_too(
    client: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    """Without ``encoding_format`` the SDK asks for base64 and decodes it: MISS then HIT."""
    first = await embed(client, model=SMALL, input=["one", "two"])
    second = await embed(client, model=SMALL, input=["one", "two"])
    assert (first.cache[0], second.cache[0]) == ("MISS", "HIT")
    assert second.vectors() == first.vectors()
    assert isinstance(first.vectors()[0][0], float)
    assert fake_upstream.state.requests["embeddings"][0]["encoding_format"] == "base64"


@pytest.mark.parametrize("encoding", ["float", "base64"])
@pytest.mark.parametrize(
    ("warm", "batch", "missing"),
    [
        pytest.param(
            ["bee balm", "dahlia"],
            ["aster", "bee balm", "cosmos flower", "dahlia", "echinacea purpurea"],
            ["aster", "cosmos flower", "echinacea purpurea"],
            id="strings",
        ),
        pytest.param([[3]], [[1, 2], [3], [4, 5, 6]], [[1, 2], [4, 5, 6]], id="token-arrays"),
    ],
)
async def test_a_partly_cached_batch_sends_only_the_missing_items(
    client: openai.AsyncOpenAI,
    direct: openai.AsyncOpenAI,
    fake_upstream: FakeUpstream,
    encoding: str,
    warm: list[Any],
    batch: list[Any],
    missing: list[Any],
) -> None:
    """The upstream receives exactly the missing items (in order, other fields unchanged); the
    answer equals a fresh full answer item by item, in order, with correct indices and model;
    ``usage`` is what the upstream billed for the missing items."""
    await embed(client, model=SMALL, input=warm, encoding_format=encoding)
    mixed = await embed(client, model=SMALL, input=batch, encoding_format=encoding)
    assert fake_upstream.state.requests["embeddings"][1] == {
        "model": SMALL,
        "input": missing,
        "encoding_format": encoding,
    }
    fresh = await embed(direct, model=SMALL, input=batch, encoding_format=encoding)
    billed = await embed(direct, model=SMALL, input=missing, encoding_format=encoding)
    assert mixed.cache == ("MISS", f"{len(warm)}/{len(batch)}")
    assert mixed.item_bytes() == fresh.item_bytes()
    assert mixed.vectors() == fresh.vectors()
    assert mixed.answer.model == SMALL
    assert mixed.answer.usage == billed.answer.usage
    again = await embed(client, model=SMALL, input=batch, encoding_format=encoding)
    assert again.cache == ("HIT", f"{len(batch)}/{len(batch)}")
    assert again.item_bytes() == fresh.item_bytes()
    assert fake_upstream.state.calls["embeddings"] == 2 + 2  # warm, missing; the two direct calls


async def test_repeated_items_are_fetched_once_and_answered_at_every_position(
    client: openai.AsyncOpenAI, direct: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    """``["x", "y", "x", "x"]`` sends ``["x", "y"]``; the answer has four items, the repeats equal;
    later batches of the same items in any order are hits."""
    first = await embed(client, model=SMALL, input=["x", "y", "x", "x"], encoding_format="float")
    vectors = first.vectors()
    assert sent_inputs(fake_upstream) == [["x", "y"]]
    assert first.cache == ("MISS", "0/4")
    assert vectors[0] == vectors[2] == vectors[3] != vectors[1]
    billed = await embed(direct, model=SMALL, input=["x", "y"], encoding_format="float")
    assert first.answer.usage == billed.answer.usage
    again = await embed(client, model=SMALL, input=["y", "x", "y"], encoding_format="float")
    assert again.cache == ("HIT", "3/3")
    assert again.vectors() == [vectors[1], vectors[0], vectors[1]]
    assert "x-cache-key" not in again.headers


async def test_user_is_ignored_and_any_other_field_keys_an_item(
    client: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    """``user`` does not change a vector (a hit); an unknown field might (its own item, forwarded)."""
    base = {"model": SMALL, "input": "keyed", "encoding_format": "float"}
    replies = [
        await embed(client, **base, user="alice"),
        await embed(client, **base, user="bob"),
        await embed(client, **base, extra_body={"x_custom": 1}),
        await embed(client, **base, extra_body={"x_custom": 1.0}),  # 1.0 and 1 are one number
    ]
    assert [r.cache[0] for r in replies] == ["MISS", "HIT", "MISS", "HIT"]
    assert fake_upstream.state.requests["embeddings"][1]["x_custom"] == 1


@pytest.mark.parametrize("given", [pytest.param(["p", "q", "p"], id="batch"), pytest.param("p", id="one")])
async def test_identical_concurrent_batches_make_one_upstream_call(
    client: openai.AsyncOpenAI, fake_upstream: FakeUpstream, given: Any
) -> None:
    """Five identical requests at once (a batch, or one item: its lock taken with the lookup):
    one upstream call, one MISS, the rest served what it stored."""
    fake_upstream.state.latency_s = 0.5
    replies = await asyncio.gather(
        *(embed(client, model=SMALL, input=given, encoding_format="float") for _ in range(5))
    )
    assert fake_upstream.state.calls["embeddings"] == 1
    assert sorted(r.cache[0] or "" for r in replies).count("MISS") == 1
    assert {r.cache[0] for r in replies} <= {"MISS", "COALESCED", "HIT"}
    assert all(r.vectors() == replies[0].vectors() for r in replies)


async def test_an_upstream_error_for_the_missing_items_is_passed_on_and_nothing_is_stored(
    client: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    """A 429 for the sub-request reaches the client as sent; the items stay missing and the next
    request fetches them (and only them)."""
    await embed(client, model=SMALL, input="cached", encoding_format="float")
    error = {"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}
    fake_upstream.state.fail_next.append((429, error))
    with pytest.raises(openai.RateLimitError) as raised:
        await embed(client, model=SMALL, input=["cached", "new"], encoding_format="float")
    assert raised.value.body == error["error"]
    assert raised.value.response.headers["x-cache-items"] == "1/2"
    retried = await embed(client, model=SMALL, input=["cached", "new"], encoding_format="float")
    assert retried.cache == ("MISS", "1/2")
    assert sent_inputs(fake_upstream) == ["cached", ["new"], ["new"]]


async def test_missing_items_too_large_to_merge_send_the_request_as_sent(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """When the missing items' answer could exceed PROXY_CACHE_MAX_ENTRY_BYTES the proxy could not
    hold it to merge: the client's request goes upstream as sent and its answer is relayed (nothing
    from the cache, ``0/n``); its items are stored when the answer fits."""
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, cache_max_entry_bytes=1500)
    params = {"model": SMALL, "encoding_format": "float", "dimensions": 8}
    async with (
        ProxyServer(settings) as proxy,
        async_client(proxy) as client,
        direct_client(fake_upstream) as direct,
    ):
        await embed(client, input=["a"], **params)
        one_missing = await embed(client, input=["a", "b"], **params)  # bound 1,352 bytes: merged
        two_missing = await embed(client, input=["a", "c", "d"], **params)  # bound 1,680: as sent
        stored = await embed(client, input=["d", "c"], **params)
        fresh = await embed(direct, input=["a", "c", "d"], **params)
    assert sent_inputs(fake_upstream)[:3] == [["a"], ["b"], ["a", "c", "d"]]
    assert [r.cache for r in (one_missing, two_missing, stored)] == [
        ("MISS", "1/2"),
        ("MISS", "0/3"),
        ("HIT", "2/2"),
    ]
    assert two_missing.raw == fresh.raw  # relayed exactly as the upstream sent it
    assert stored.vectors() == fresh.vectors()[:0:-1]


async def test_the_in_memory_store_caches_items_too(fake_upstream: FakeUpstream, key_prefix: str) -> None:
    """Without Redis (the embedded LRU): partly cached batches and hits work the same."""
    settings = proxy_settings(fake_upstream.url, None, key_prefix)
    async with ProxyServer(settings) as proxy, async_client(proxy) as client:
        first = await embed(client, model=SMALL, input=["k", "l"], encoding_format="float")
        mixed = await embed(client, model=SMALL, input=["l", "m", "k"], encoding_format="float")
        hit = await embed(client, model=SMALL, input=["m", "k", "l"], encoding_format="float")
    assert [r.cache for r in (first, mixed, hit)] == [("MISS", "0/2"), ("MISS", "2/3"), ("HIT", "3/3")]
    assert sent_inputs(fake_upstream) == [["k", "l"], ["m"]]
    assert hit.vectors() == [mixed.vectors()[1], first.vectors()[0], first.vectors()[1]]


async def test_items_are_purged_like_any_entry(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """An item's ``X-Cache-Key`` purges that item; a key's namespace purge removes all its items."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        key, secret = await create_key(proxy)
        async with async_client(proxy, secret) as client:
            one = await embed(client, model=SMALL, input="solo")
            await embed(client, model=SMALL, input=["p1", "p2"])
            by_hash = await admin(proxy, "POST", "/cache/purge", {"key_hash": one.headers["x-cache-key"]})
            solo = await embed(client, model=SMALL, input="solo")
            pair = await embed(client, model=SMALL, input=["p1", "p2"])
            by_key = await admin(proxy, "POST", "/cache/purge", {"key_id": key["id"]})
            after = await embed(client, model=SMALL, input=["solo", "p2"])
    assert (by_hash.json()["deleted"], by_key.json()["deleted"]) == (1, 3)
    assert [r.cache for r in (solo, pair, after)] == [("MISS", "0/1"), ("HIT", "2/2"), ("MISS", "0/2")]


@pytest.mark.parametrize("given", [pytest.param(["r", "s"], id="batch"), pytest.param("r", id="one")])
async def test_identical_requests_on_two_replicas_make_one_upstream_call(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, given: Any
) -> None:
    """Two proxies on one Redis: identical concurrent requests on both share one upstream call
    (the Redis lock and announcement), and every answer is the same."""
    fake_upstream.state.latency_s = 0.5
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix)
    async with (
        ProxyServer(settings) as one,
        ProxyServer(settings) as two,
        async_client(one) as a,
        async_client(two) as b,
    ):
        replies = await asyncio.gather(
            *(embed(sdk, model=SMALL, input=given, encoding_format="float") for sdk in (a, b, a, b))
        )
    assert fake_upstream.state.calls["embeddings"] == 1
    assert [r.cache[0] for r in replies].count("MISS") == 1
    assert all(r.vectors() == replies[0].vectors() for r in replies)
