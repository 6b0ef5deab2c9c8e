"""``GET /v1/models`` through the proxy: the model list cached per cache scope for ``PROXY_MODELS_TTL``.

The openai SDK and raw requests against the simulator with a real Redis: one upstream call for two
requests, a second one after the TTL, one entry per tenant (or one in ``shared`` scope), upstream
errors never stored, ``/v1/models/{id}`` its own entry, managed keys served with the proxy's key,
``PROXY_MODELS_TTL=0`` passing the list through, and the ``endpoint="models"`` metric.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis

from proxy.config import Settings
from tests.e2e_helpers import API_KEY, RawReply, async_client, redis_keys, send_raw
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import UPSTREAM_KEY, create_key, managed_proxy, metric_value, metrics_text
from tests.proxy_harness import ProxyServer, proxy_settings


async def _models(proxy: ProxyServer, path: str = "/models", api_key: str | None = API_KEY) -> RawReply:
    return await send_raw(f"{proxy.url}{path}", None, method="GET", api_key=api_key)


async def test_two_sdk_lists_make_one_upstream_call(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """client.models.list() twice: MISS then HIT with the same bytes, the upstream asked once."""
    async with async_client(proxy) as client:
        first = await client.models.with_raw_response.list()
        second = await client.models.with_raw_response.list()
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.content == second.content
    assert [m.id for m in second.parse().data] == [m.id for m in first.parse().data]
    assert first.parse().data  # a real list, not an empty answer
    assert fake_upstream.state.calls["models"] == 1


async def test_the_list_is_fetched_again_after_the_ttl(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    """With PROXY_MODELS_TTL=1 the entry lives one second: a GET after it goes upstream again."""
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, models_ttl=1)
    async with ProxyServer(settings) as proxy:
        assert (await _models(proxy)).headers["X-Cache"] == "MISS"
        assert (await _models(proxy)).headers["X-Cache"] == "HIT"
        (key,) = await redis_keys(redis_client, f"{key_prefix}:r1:*")
        assert 0 < await redis_client.pttl(key) <= 1000
        await asyncio.sleep(1.2)
        assert (await _models(proxy)).headers["X-Cache"] == "MISS"
    assert fake_upstream.state.calls["models"] == 2


async def test_each_tenant_has_its_own_list(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """Key scope: two bearers, two entries and two upstream calls; each bearer's second GET is a HIT."""
    replies = [await _models(proxy, api_key=bearer) for bearer in ("sk-tenant-a", "sk-tenant-b")]
    again = [await _models(proxy, api_key=bearer) for bearer in ("sk-tenant-a", "sk-tenant-b")]
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "MISS"]
    assert [r.headers["X-Cache"] for r in again] == ["HIT", "HIT"]
    assert replies[0].headers["X-Cache-Key"] != replies[1].headers["X-Cache-Key"]
    assert fake_upstream.state.calls["models"] == 2


async def test_shared_scope_keeps_one_list_for_verified_callers(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Shared scope: one entry; a second bearer gets the HIT only once the upstream accepted it, and
    a bearer the upstream refuses gets the upstream's 401, not the cached list."""
    fake_upstream.state.valid_keys = {"sk-tenant-a", "sk-tenant-b"}
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, cache_scope="shared")
    async with ProxyServer(settings) as proxy:
        first = await _models(proxy, api_key="sk-tenant-a")
        second = await _models(proxy, api_key="sk-tenant-b")
        refused = await _models(proxy, api_key="sk-intruder")
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.body == second.body
    assert refused.status == 401
    assert refused.body != first.body
    # The list once, plus one verification each for tenant b and the intruder (GET /models too).
    assert fake_upstream.state.calls["models"] == 3


async def test_an_upstream_error_is_not_cached(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    """A 401 from the upstream reaches the client as it was, twice, with nothing stored."""
    fake_upstream.state.valid_keys = {"sk-the-only-good-key"}
    async with ProxyServer(proxy_settings(fake_upstream.url, redis_url, key_prefix)) as proxy:
        replies = [await _models(proxy, api_key="sk-wrong") for _ in range(2)]
    assert [r.status for r in replies] == [401, 401]
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "MISS"]
    assert orjson.loads(replies[0].body)["error"]
    assert fake_upstream.state.calls["models"] == 2
    assert await redis_keys(redis_client, f"{key_prefix}:r1:*") == []


async def test_a_list_over_the_entry_limit_is_relayed_whole_and_not_stored(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    """With PROXY_CACHE_MAX_ENTRY_BYTES under the list's size, the client still gets the whole list
    (streamed through), twice from the upstream, and nothing is stored."""
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, cache_max_entry_bytes=1000)
    async with ProxyServer(settings) as proxy:
        replies = [await _models(proxy) for _ in range(2)]
    assert [r.status for r in replies] == [200, 200]
    assert len(replies[0].body) > 1000
    assert replies[0].json()["object"] == "list"
    assert [r.headers["X-Cache"] for r in replies] == ["MISS", "MISS"]
    assert fake_upstream.state.calls["models"] == 2
    assert await redis_keys(redis_client, f"{key_prefix}:r1:*") == []


async def test_one_model_is_its_own_entry(proxy: ProxyServer, fake_upstream: FakeUpstream) -> None:
    """GET /v1/models/{id} is cached apart from the list (and from another id)."""
    one = [await _models(proxy, "/models/gpt-4o-mini") for _ in range(2)]
    other = await _models(proxy, "/models/gpt-4o")
    listing = await _models(proxy)
    assert [r.headers["X-Cache"] for r in one] == ["MISS", "HIT"]
    assert other.headers["X-Cache"] == "MISS"
    assert listing.headers["X-Cache"] == "MISS"
    assert (
        len({one[0].headers["X-Cache-Key"], other.headers["X-Cache-Key"], listing.headers["X-Cache-Key"]})
        == 3
    )
    assert orjson.loads(one[1].body)["path"] == "/v1/models/gpt-4o-mini"  # the simulator's echo
    assert fake_upstream.state.calls["/v1/models/gpt-4o-mini"] == 1


async def test_managed_keys_get_the_list_with_the_proxys_key(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A managed key's GET goes upstream with the proxy's key; each key has its own entry, and a
    key limited to one paid endpoint still reads the (free) model list."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        _, secret_a = await create_key(proxy, alias="a", endpoints=["embeddings"])
        _, secret_b = await create_key(proxy, alias="b")
        a = [await _models(proxy, api_key=secret_a) for _ in range(2)]
        b = await _models(proxy, api_key=secret_b)
        unknown = await _models(proxy, api_key="sk-lcp-not-a-key")
    assert [(r.status, r.headers["X-Cache"]) for r in a] == [(200, "MISS"), (200, "HIT")]
    assert (b.status, b.headers["X-Cache"]) == (200, "MISS")
    assert unknown.status == 401
    # managed_proxy makes the upstream accept only UPSTREAM_KEY: the 200s prove it was the one sent.
    assert fake_upstream.state.valid_keys == {UPSTREAM_KEY}
    assert fake_upstream.state.calls["models"] == 2


async def test_models_ttl_zero_passes_the_list_through(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """PROXY_MODELS_TTL=0: every GET reaches the upstream and nothing says X-Cache."""
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, models_ttl=0)
    async with ProxyServer(settings) as proxy:
        replies = [await _models(proxy) for _ in range(2)]
    assert [r.status for r in replies] == [200, 200]
    assert all("X-Cache" not in r.headers for r in replies)
    assert fake_upstream.state.calls["models"] == 2


async def test_model_list_lookups_are_counted_under_their_endpoint(
    proxy: ProxyServer, fake_upstream: FakeUpstream
) -> None:
    """Requests and cache results of the list carry endpoint="models" (kept apart from paid endpoints)."""
    for _ in range(3):
        await _models(proxy)
    text = await metrics_text(proxy)
    assert metric_value(text, "llm_proxy_cache_results_total", endpoint="models", result="hit") == 2
    assert metric_value(text, "llm_proxy_cache_results_total", endpoint="models", result="miss") == 1
    hits = metric_value(text, "llm_proxy_requests_total", endpoint="models", cache="hit", status_class="2xx")
    assert hits == 2


def test_models_ttl_is_a_setting_with_a_default_of_a_minute() -> None:
    """PROXY_MODELS_TTL defaults to 60 s, reads from the environment, and refuses a negative value."""
    assert Settings().models_ttl == 60
    assert Settings.from_env({"PROXY_MODELS_TTL": "0"}).models_ttl == 0
    with pytest.raises(ValueError, match="PROXY_MODELS_TTL"):
        Settings.from_env({"PROXY_MODELS_TTL": "-1"})
