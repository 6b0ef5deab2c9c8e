"""Cache scope and verified callers: tenants never see each other's answers, refused keys get nothing."""

from __future__ import annotations

import aiohttp
import redis.asyncio as aioredis

from tests.fake_upstream import FakeUpstream
from tests.proxy_harness import ProxyServer, proxy_settings

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "tenant secret plan"}]}


async def _post(url: str, bearer: str | None) -> tuple[int, str, bytes]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/chat/completions", json=BODY, headers=headers) as resp,
    ):
        return resp.status, resp.headers.get("X-Cache", ""), await resp.read()


async def test_key_scope_isolates_tenants(fake_upstream: FakeUpstream, proxy: ProxyServer) -> None:
    """Default scope: the same prompt from another bearer is a MISS, never tenant A's entry."""
    assert (await _post(proxy.url, "sk-tenant-a"))[1] == "MISS"
    assert (await _post(proxy.url, "sk-tenant-a"))[1] == "HIT"
    status, cache, _ = await _post(proxy.url, "sk-tenant-b")
    assert (status, cache) == (200, "MISS")
    assert fake_upstream.chat_calls == 2


async def test_requests_without_authorization_are_never_cached(
    fake_upstream: FakeUpstream, proxy: ProxyServer
) -> None:
    """No bearer: no lookup and no store, so an anonymous caller can't read or plant entries."""
    assert (await _post(proxy.url, None))[1] == "BYPASS"
    assert (await _post(proxy.url, None))[1] == "BYPASS"
    assert fake_upstream.chat_calls == 2


async def test_shared_scope_serves_verified_bearers_and_refuses_invalid_ones(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: object
) -> None:
    """Shared scope: a valid second tenant hits after one verification; an invalid bearer gets 401."""
    fake_upstream.state.valid_keys = {"sk-good-a", "sk-good-b"}
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, cache_scope="shared")
    async with ProxyServer(settings) as proxy:
        assert (await _post(proxy.url, "sk-good-a"))[1] == "MISS"
        status, cache, _ = await _post(proxy.url, "sk-good-b")
        assert (status, cache) == (200, "HIT")
        assert fake_upstream.state.calls["models"] == 1  # sk-good-b verified once
        assert (await _post(proxy.url, "sk-good-b"))[1] == "HIT"
        assert fake_upstream.state.calls["models"] == 1  # and remembered
        status, _, body = await _post(proxy.url, "sk-stolen")
        assert status == 401
        assert b"tenant secret plan" not in body
        assert b"Echo" not in body
        assert b'"error"' in body
    assert fake_upstream.chat_calls == 1


async def test_verified_bearers_are_remembered_as_hashes_only(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: object
) -> None:
    """The verified-bearer record in Redis is keyed by sha256; the plaintext key is nowhere."""
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix, cache_scope="shared")
    async with ProxyServer(settings) as proxy:
        await _post(proxy.url, "sk-plaintext-must-not-leak")
    client = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"{key_prefix}*", count=1000)]
    assert any(b":verified:" in k for k in keys)
    for key in keys:
        assert b"sk-plaintext-must-not-leak" not in key
        if await client.type(key) == b"string":
            assert b"sk-plaintext-must-not-leak" not in (await client.get(key) or b"")
    await client.aclose()
