"""The console's image index (``cache.index``) on the in-memory store and on a real Redis: newest
first and paged, rows of vanished entries dropped when met, capped, TTLs as the entry's, hit
counts kept in the process until a flush (no Redis write per hit), purges forgotten."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlparse

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from proxy.cache.entry import BlobRef, CachedEntry, EntryMeta
from proxy.cache.index import ImageIndex, MemoryRows, RedisRows, Rows, excerpt_of
from proxy.cache.response import Origin
from proxy.endpoints.fields import prompt_text
from proxy.storage.base import ByteStore
from proxy.storage.memory import MemoryStore
from proxy.storage.redis import RedisStore
from tests.slow_link import SlowLink

NOW = 1_800_000_000.0


def _digest(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


@asynccontextmanager
async def index_on(backend: str, redis_url: str, prefix: str, cap: int = 1000) -> AsyncIterator[ImageIndex]:
    store: ByteStore
    rows: Rows
    if backend == "redis":
        redis_store = RedisStore(redis_url, 1.0)
        store, rows = redis_store, RedisRows(redis_store.client, prefix, 2.0, cap=cap)
    else:
        store, rows = MemoryStore(1 << 24), MemoryRows(cap=cap)
    clock = [NOW]
    index = ImageIndex(rows, store, prefix, lambda _model, meta: 39_000 * meta.images, clock=lambda: clock[0])
    try:
        yield index
    finally:
        await store.close()


async def store_entry(index: ImageIndex, i: int, *, ttl: float = 600, prompt: str = "a fox") -> str:
    """An image entry ``i`` (a stand-in record in the store) told to the index as stored."""
    key = index.entry_key(f"ns:{_digest(i)}")
    await index.store.set(key, b"record", int(ttl))
    meta = EntryMeta(
        created=NOW + i,
        model="",
        prompt_tokens=10,
        completion_tokens=1290,
        images=1,
        blobs=(BlobRef(10, _digest(-i), 1000 + i, (0, 0)),),
        expires=NOW + i + ttl,
    )
    index.stored(CachedEntry(key, meta, memoryview(b"{}"), (b"x",)), 2000 + i, Origin("img-model", prompt))
    return key


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_rows_come_newest_first_a_page_at_a_time(redis_url: str, key_prefix: str, backend: str) -> None:
    """30 entries: pages of 12 from offset 0, 12, 24 list them newest first with the request's model,
    prompt, size and price; the total counts them all."""
    async with index_on(backend, redis_url, key_prefix) as index:
        for i in range(30):
            await store_entry(index, i, prompt=f"prompt {i}")
        pages = [await index.page(offset, 12) for offset in (0, 12, 24)]
    ids = [row.id for rows, _ in pages for row in rows]
    assert ids == [f"ns:{_digest(i)}" for i in reversed(range(30))]
    assert [total for _, total in pages] == [30, 30, 30]
    first = pages[0][0][0]
    assert (first.model, first.excerpt, first.size, first.cost_micro) == (
        "img-model",
        "prompt 29",
        2029,
        39_000,
    )
    assert (first.sha256, first.blob_size) == (_digest(-29), 1029)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_rows_of_vanished_entries_are_dropped_when_met(
    redis_url: str, key_prefix: str, backend: str
) -> None:
    """An entry deleted behind the index's back (evicted, purged by another replica) is not listed,
    and its row is gone for good after the page met it."""
    async with index_on(backend, redis_url, key_prefix) as index:
        keys = [await store_entry(index, i) for i in range(5)]
        await index.store.delete([keys[1], keys[3]])
        rows, total = await index.page(0, 10)
        again, total_again = await index.page(0, 10)
    assert [row.id for row in rows] == [f"ns:{_digest(i)}" for i in (4, 2, 0)]
    assert total == 3
    assert [row.id for row in again] == [row.id for row in rows]
    assert total_again == 3


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_the_index_is_capped_oldest_first(redis_url: str, key_prefix: str, backend: str) -> None:
    """With a cap of 5, 8 entries leave the 5 newest in the index."""
    async with index_on(backend, redis_url, key_prefix, cap=5) as index:
        for i in range(8):
            await store_entry(index, i)
            await index.flush()
        rows, total = await index.page(0, 100)
    assert [row.id for row in rows] == [f"ns:{_digest(i)}" for i in (7, 6, 5, 4, 3)]
    assert total == 5


async def test_hits_stay_in_the_process_until_a_flush(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    """Three hits write nothing to Redis (the row's hash still says 0); one flush adds 3."""
    async with index_on("redis", redis_url, key_prefix) as index:
        key = await store_entry(index, 1)
        await index.flush()
        row_key = f"{key_prefix}:ix:e:ns:{_digest(1)}"
        for _ in range(3):
            index.served(key)
        before = await redis_client.hget(row_key, "hits")
        await index.flush()
        after = await redis_client.hget(row_key, "hits")
        rows, _ = await index.page(0, 1)
    assert before == b"0"
    assert after == b"3"
    assert rows[0].hits == 3


async def test_redis_rows_live_as_long_as_their_entry(
    redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    """The row's hash expires with its entry; the sorted set lives as long as its longest row; a
    hit counted after the row expired creates no hash without a TTL."""
    async with index_on("redis", redis_url, key_prefix) as index:
        await store_entry(index, 1, ttl=600)
        await store_entry(index, 2, ttl=3600)
        await index.flush()
        row_ttl = await redis_client.ttl(f"{key_prefix}:ix:e:ns:{_digest(1)}")
        set_ttl = await redis_client.ttl(f"{key_prefix}:ix:images")
        gone = f"{key_prefix}:ix:e:ns:{_digest(1)}"
        await redis_client.delete(gone)
        index.served(index.entry_key(f"ns:{_digest(1)}"))
        await index.flush()
        recreated = await redis_client.exists(gone)
    assert 595 <= row_ttl <= 601  # the entry expires at NOW + 1 + 600
    assert 3595 <= set_ttl <= 3602
    assert recreated == 0


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_purged_entries_leave_the_index(redis_url: str, key_prefix: str, backend: str) -> None:
    """``removed`` (what a purge tells the index) drops the rows at the next flush."""
    async with index_on(backend, redis_url, key_prefix) as index:
        keys = [await store_entry(index, i) for i in range(3)]
        await index.flush()
        index.removed([keys[0], keys[2]])
        await index.flush()
        rows, total = await index.rows.page(0, 10)  # the rows themselves, no entry check
    assert [row.id for row in rows] == [f"ns:{_digest(1)}"]
    assert total == 1


def test_prompt_excerpts_are_bounded_and_single_line() -> None:
    """At most 200 characters; newlines and control characters fold into single spaces."""
    assert excerpt_of("a\nb\t\x00c   d") == "a b c d"
    assert len(excerpt_of("x" * 10_000)) == 200


@given(st.text(max_size=2000))
def test_any_prompt_makes_a_bounded_single_line_excerpt(text: str) -> None:
    """Whatever the prompt: at most 200 characters, all printable, no leading, trailing or double
    spaces (what a gallery card can show as one text node)."""
    excerpt = excerpt_of(text)
    assert len(excerpt) <= 200
    assert excerpt.isprintable()
    assert excerpt == " ".join(excerpt.split())


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@given(st.dictionaries(st.sampled_from(["prompt", "messages", "input", "model"]), _JSON, max_size=4))
def test_prompt_text_takes_any_request_body(body: dict[str, object]) -> None:
    """Any JSON body (wrong types included) yields a string of at most 400 characters, never an error."""
    text = prompt_text(body)
    assert isinstance(text, str)
    assert len(text) <= 400


def test_prompt_text_reads_each_api_shape() -> None:
    """Images: ``prompt``; chat: the last user message (string or text parts); Responses: ``input``."""
    chat = {
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": [{"type": "text", "text": "draw"}, {"type": "image_url"}]},
        ]
    }
    assert prompt_text({"prompt": "a fox"}) == "a fox"
    assert prompt_text(chat) == "draw"
    assert prompt_text({"input": "a cat"}) == "a cat"
    assert prompt_text({"input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}]}) == "x"
    assert prompt_text({"messages": [{"role": "system", "content": "only system"}]}) == ""


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_an_entry_purged_and_stored_again_before_a_flush_keeps_its_new_row(
    redis_url: str, key_prefix: str, backend: str
) -> None:
    """Purge (next request a MISS) then store again within one flush period: the fresh row is
    listed; stored then purged within one period: no row."""
    async with index_on(backend, redis_url, key_prefix) as index:
        key = await store_entry(index, 1)
        await index.flush()
        index.removed([key])
        await store_entry(index, 1, prompt="stored again")
        other = await store_entry(index, 2)
        index.removed([other])
        await index.store.delete([other])
        await index.flush()
        rows, total = await index.rows.page(0, 10)
    assert [(row.id, row.excerpt) for row in rows] == [(f"ns:{_digest(1)}", "stored again")]
    assert total == 1


async def test_a_page_read_waits_for_the_background_flush_that_took_the_hits(
    redis_url: str, key_prefix: str
) -> None:
    """A new row and a hit, then the background flush takes both and writes them over a slow link
    while a page is read: the page's own flush waits for it, so the page shows the hit (without
    the wait it read the row before the count was written, and showed 0)."""
    port = urlparse(redis_url).port or 6379
    async with SlowLink(port, 0.05) as link, index_on("redis", link.url, key_prefix) as index:
        key = await store_entry(index, 1)
        index.served(key)  # a new row and its first hit, both pending
        background = asyncio.create_task(index.flush())
        await asyncio.sleep(0)  # the background flush took both and writes the row first
        rows, _ = await index.page(0, 10)
        await background
    assert [row.hits for row in rows] == [1]
