"""Redis Cluster (``redis+cluster://``): the real proxy on a real 3-primary cluster."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from proxy.config import Secret
from proxy.state import STATE_GUARD
from proxy.storage.cluster import ClusterStore, parse_cluster_url
from tests.console_helpers import ConsoleClient
from tests.e2e_helpers import IMAGE_MODEL, TEXT_MODEL, chat_body, chat_raw, send_raw, sse_chunks, sse_data
from tests.fake_upstream import FakeUpstream, png_of
from tests.managed_helpers import ADMIN_TOKEN, admin, create_key, key_status, managed_proxy
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.redis_process import RedisClusterProcess


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    """A fresh 3-primary Redis Cluster for this module (fails loudly without redis-server/cli)."""
    cluster = RedisClusterProcess(3).start()
    try:
        yield cluster.url
    finally:
        cluster.remove()


@pytest.fixture
async def cluster_client(cluster_url: str) -> AsyncIterator[RedisCluster]:
    """A redis-py cluster client on the test cluster, to look at what the proxy stored."""
    host, port = parse_cluster_url(cluster_url).nodes[0]
    client = RedisCluster(host=host, port=port)
    yield client
    await client.aclose()


@pytest.fixture
async def cluster_proxy(
    fake_upstream: FakeUpstream, cluster_url: str, key_prefix: str
) -> AsyncIterator[ProxyServer]:
    """The proxy on the cluster, in front of the fake upstream."""
    async with ProxyServer(proxy_settings(fake_upstream.url, cluster_url, key_prefix)) as server:
        yield server


def _message_image(reply_body: bytes) -> str:
    url: str = orjson.loads(reply_body)["choices"][0]["message"]["images"][0]["image_url"]["url"]
    return url


async def test_image_miss_then_hit_with_blob_chunks_on_several_slots(
    cluster_proxy: ProxyServer, fake_upstream: FakeUpstream, cluster_client: RedisCluster, key_prefix: str
) -> None:
    """A 1.5 MB image is stored in chunks spread over slots and nodes; the hit is byte-identical."""
    first = await chat_raw(cluster_proxy, chat_body("a lighthouse", IMAGE_MODEL))
    second = await chat_raw(cluster_proxy, chat_body("a lighthouse", IMAGE_MODEL))
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert fake_upstream.chat_calls == 1
    assert second.body == first.body
    assert len(png_of(_message_image(second.body))) > 1_400_000
    chunks = [key async for key in cluster_client.scan_iter(match=f"{key_prefix}:blob:*")]
    slots = {cluster_client.keyslot(key) for key in chunks}
    nodes = {cluster_client.nodes_manager.get_node_from_slot(slot).name for slot in slots}
    assert len(chunks) >= 5
    assert len(slots) == len(chunks)
    assert len(nodes) >= 2


async def test_stream_request_hits_the_stored_entry(
    cluster_proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """A streamed request after a non-streamed miss is a HIT replayed as complete SSE."""
    miss = await chat_raw(cluster_proxy, chat_body("a haiku about slots"))
    hit = await chat_raw(cluster_proxy, chat_body("a haiku about slots", stream=True))
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert fake_upstream.chat_calls == 1
    assert sse_data(hit.body)[-1] == b"[DONE]"
    content = "".join(
        choice["delta"].get("content") or "" for chunk in sse_chunks(hit.body) for choice in chunk["choices"]
    )
    assert content == miss.json()["choices"][0]["message"]["content"]


async def test_two_replicas_coalesce_a_burst_into_one_upstream_call(
    fake_upstream: FakeUpstream, cluster_url: str, key_prefix: str
) -> None:
    """16 identical concurrent requests over two replicas on one cluster make 1 upstream call."""
    fake_upstream.state.latency_s = 0.5
    fake_upstream.state.image_bytes = 200_000
    settings = proxy_settings(fake_upstream.url, cluster_url, key_prefix)
    body = chat_body("a burst across replicas", IMAGE_MODEL)
    async with (
        ProxyServer(settings) as first,
        ProxyServer(dataclasses.replace(settings, port=0)) as second,
    ):
        replies = await asyncio.gather(*(chat_raw(proxy, body) for proxy in [first, second] * 8))
    assert fake_upstream.chat_calls == 1
    assert {reply.status for reply in replies} == {200}
    assert len({reply.body for reply in replies}) == 1
    assert [reply.headers["X-Cache"] for reply in replies].count("MISS") == 1


async def test_no_cache_refreshes_the_entry(cluster_proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """Cache-Control: no-cache goes upstream and its answer replaces the stored entry."""
    body = chat_body("refresh me", TEXT_MODEL)
    first = await chat_raw(cluster_proxy, body)
    refreshed = await chat_raw(cluster_proxy, body, headers={"Cache-Control": "no-cache"})
    hit = await chat_raw(cluster_proxy, body)
    assert [r.headers["X-Cache"] for r in (first, refreshed, hit)] == ["MISS", "BYPASS", "HIT"]
    assert fake_upstream.chat_calls == 2
    assert hit.body == refreshed.body != first.body


async def test_managed_key_budget_and_namespace_purge(
    fake_upstream: FakeUpstream, cluster_url: str, key_prefix: str
) -> None:
    """Managed keys, budget reserve/settle and an admin purge by namespace all work on a cluster."""
    async with managed_proxy(fake_upstream, cluster_url, key_prefix) as proxy:
        key, secret = await create_key(proxy, budget_usd=1, period="day")
        miss = await chat_raw(proxy, chat_body("budgeted"), api_key=secret)
        hit = await chat_raw(proxy, chat_body("budgeted"), api_key=secret)
        status = await key_status(proxy, key["id"])
        purged = await admin(proxy, "POST", "/cache/purge", {"key_id": key["id"]})
        again = await chat_raw(proxy, chat_body("budgeted"), api_key=secret)
        revoked = await admin(proxy, "DELETE", f"/keys/{key['id']}")
        refused = await chat_raw(proxy, chat_body("budgeted"), api_key=secret)
    assert (miss.status, miss.headers["X-Cache"], hit.headers["X-Cache"]) == (200, "MISS", "HIT")
    assert status["spend_micro_usd"] > 0
    assert status["reserved_usd"] == 0
    assert purged.json() == {"deleted": 1, "namespace": key["effective_cache_namespace"]}
    assert again.headers["X-Cache"] == "MISS"
    assert revoked.status == 200
    assert refused.status == 401
    assert fake_upstream.chat_calls == 2


async def test_proxy_starts_before_the_cluster_and_uses_it_once_up(
    fake_upstream: FakeUpstream, key_prefix: str
) -> None:
    """Booted while no node answers: requests BYPASS to upstream; once the cluster is up, they cache."""
    cluster = RedisClusterProcess(3)  # ports chosen, nothing started yet
    try:
        async with ProxyServer(proxy_settings(fake_upstream.url, cluster.url, key_prefix)) as proxy:
            down = await chat_raw(proxy, chat_body("early bird"))
            await asyncio.to_thread(cluster.start)
            miss = await chat_raw(proxy, chat_body("early bird"))
            hit = await chat_raw(proxy, chat_body("early bird"))
    finally:
        cluster.remove()
    assert (down.status, down.headers["X-Cache"]) == (200, "BYPASS")
    assert [r.headers["X-Cache"] for r in (miss, hit)] == ["MISS", "HIT"]
    assert fake_upstream.chat_calls == 2


async def test_a_burst_of_first_commands_on_a_cold_client_all_succeed(
    cluster_url: str, key_prefix: str
) -> None:
    """32 concurrent first commands on a fresh cluster client all succeed (no slot-discovery race)."""
    store = ClusterStore(cluster_url, 1.0)
    try:
        results = await asyncio.gather(
            *(store.client.scard(f"{key_prefix}:none") for _ in range(32)), return_exceptions=True
        )
    finally:
        await store.close()
    assert results == [0] * 32


def test_cluster_urls_are_parsed_with_every_seed_and_credentials() -> None:
    """``redis+cluster://`` takes several host:port seeds, credentials and a TLS variant."""
    seed = parse_cluster_url("rediss+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2:7001/0")
    assert seed.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert (seed.username, seed.password, seed.ssl) == ("user", "p@ss", True)
    with pytest.raises(ValueError, match="host:port"):
        parse_cluster_url("redis+cluster://10.0.0.1")


async def test_a_cluster_as_state_redis_is_checked_on_every_primary(
    fake_upstream: FakeUpstream, cluster_url: str, redis_url: str, key_prefix: str
) -> None:
    """PROXY_STATE_REDIS_URL may be a cluster (the cache elsewhere): keys and budgets live there,
    and one primary that may evict is enough to refuse keys with a budget."""
    host, port = parse_cluster_url(cluster_url).nodes[0]
    async with managed_proxy(fake_upstream, redis_url, key_prefix, state_redis_url=cluster_url) as proxy:
        key, secret = await create_key(proxy, budget_usd=1)
        served = await chat_raw(proxy, chat_body("state on a cluster"), api_key=secret)
        status = await key_status(proxy, key["id"])
        guard = proxy.app[STATE_GUARD]
        safe_before = guard.safe
        node = redis.Redis(host=host, port=port)  # a private test cluster: ours to reconfigure
        node.config_set("maxmemory", "100mb")
        node.config_set("maxmemory-policy", "allkeys-lru")
        try:
            unsafe = await guard.check()
            refused = await chat_raw(proxy, chat_body("state on a cluster, again"), api_key=secret)
        finally:
            node.config_set("maxmemory", "0")
            node.config_set("maxmemory-policy", "noeviction")
            node.close()
    assert (safe_before, unsafe) == (True, False)
    assert served.status == 200
    assert status["spend_micro_usd"] > 0
    assert refused.status == 503
    assert refused.json()["error"]["code"] == "state_store_unsafe"


async def test_embedding_items_spread_over_slots_are_found_and_stored(
    cluster_proxy: ProxyServer, fake_upstream: FakeUpstream, cluster_client: RedisCluster, key_prefix: str
) -> None:
    """Embedding items live in many slots: stored in one pipeline, found with a slot-split MGET;
    a partly cached batch sends only the missing items."""
    items = [f"item {i}" for i in range(12)]
    body = {"model": "text-embedding-3-small", "encoding_format": "float"}
    url = f"{cluster_proxy.url}/embeddings"
    first = await send_raw(url, {**body, "input": items[:8]})
    mixed = await send_raw(url, {**body, "input": items})
    hit = await send_raw(url, {**body, "input": items[::-1]})
    assert [r.headers["X-Cache-Items"] for r in (first, mixed, hit)] == ["0/8", "8/12", "12/12"]
    assert [body["input"] for body in fake_upstream.state.requests["embeddings"]] == [items[:8], items[8:]]
    entries = [key async for key in cluster_client.scan_iter(match=f"{key_prefix}:r1:*")]
    assert len(entries) == 12
    assert len({cluster_client.keyslot(key) for key in entries}) > 1
    assert orjson.loads(hit.body)["data"][0] == orjson.loads(mixed.body)["data"][11] | {"index": 0}


async def test_console_lists_counts_thumbnails_and_purges_on_the_cluster(
    fake_upstream: FakeUpstream, cluster_url: str, key_prefix: str
) -> None:
    """The console's index, hit counts (flushed with EVAL per row), overview buckets, sessions and
    thumbnails work on a cluster (keys on many slots, single-key commands only); a purge from the
    list makes the next request a MISS."""
    fake_upstream.state.image_bytes = 20_000
    settings = proxy_settings(fake_upstream.url, cluster_url, key_prefix, admin_token=Secret(ADMIN_TOKEN))
    async with ProxyServer(settings) as proxy:
        body = chat_body("a lighthouse on the cluster", IMAGE_MODEL)
        first = await chat_raw(proxy, body)
        second = await chat_raw(proxy, body)
        async with ConsoleClient(proxy) as console:
            assert (await console.login()).status == 303
            _, listed, _ = await console.call("GET", "/ui/api/images")
            row = listed["data"][0]
            _, overview, _ = await console.call("GET", "/ui/api/overview")
            thumb_status, _, thumb = await console.call(
                "GET", f"/ui/api/thumbs/{row['sha256']}?size={row['blob_size']}"
            )
            purged, _, _ = await console.call("POST", "/ui/api/images/purge", {"id": row["id"]})
        third = await chat_raw(proxy, body)
    assert [r.headers["X-Cache"] for r in (first, second, third)] == ["MISS", "HIT", "MISS"]
    assert (row["prompt"], row["hits"]) == ("a lighthouse on the cluster", 1)
    assert overview["hour"]["hits"] == 1
    assert (thumb_status, thumb.content_type) == (200, "image/webp")
    assert purged == 200
