"""Single flight across processes when the leader dies mid-generation."""

from __future__ import annotations

import asyncio

import aiohttp
import redis.asyncio as aioredis

from tests.fake_upstream import FakeUpstream
from tests.proxy_process import ProxyProcess

BODY = {"model": "gemini-2.5-flash-image-preview", "messages": [{"role": "user", "content": "crash me"}]}


def _env(upstream: FakeUpstream, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """``PROXY_*`` for a proxy process in front of the fake upstream, on this test's Redis prefix."""
    base = {"PROXY_UPSTREAM_URL": upstream.url, "PROXY_REDIS_URL": redis_url, "PROXY_REDIS_PREFIX": prefix}
    return base | {f"PROXY_{name.upper()}": value for name, value in extra.items()}


async def test_leader_killed_mid_generation_a_waiter_takes_over_with_one_more_call(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    """Leader process SIGKILLed: its lock lapses, a waiter on another process leads; ≤ 1 extra call."""
    fake_upstream.state.latency_s = 2.5
    fake_upstream.state.image_bytes = 200_000
    env = _env(fake_upstream, redis_url, key_prefix, lock_ttl="1.5")
    leader = await asyncio.to_thread(ProxyProcess(env).start)
    waiter = await asyncio.to_thread(ProxyProcess(env).start)
    headers = {"Authorization": "Bearer sk-crash"}
    try:
        async with aiohttp.ClientSession() as session:

            async def post(url: str) -> tuple[int, str]:
                async with session.post(f"{url}/chat/completions", json=BODY, headers=headers) as resp:
                    await resp.read()
                    return resp.status, resp.headers.get("X-Cache", "")

            doomed = asyncio.create_task(post(leader.url))
            await asyncio.sleep(0.5)
            survivor = asyncio.create_task(post(waiter.url))
            await asyncio.sleep(0.5)
            assert fake_upstream.chat_calls == 1, "the waiter must not call upstream while the leader lives"
            leader.kill()
            status, cache = await asyncio.wait_for(survivor, timeout=15)
            doomed.cancel()
        assert status == 200
        assert cache == "MISS"  # it led the retry itself
        assert fake_upstream.chat_calls == 2
    finally:
        await asyncio.to_thread(waiter.stop)
        leader.close()
        waiter.close()


async def test_sigterm_waits_for_an_in_flight_generation_then_exits_cleanly(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    """Graceful shutdown: a generation under way when SIGTERM arrives is answered and stored."""
    fake_upstream.state.latency_s = 1.5
    fake_upstream.state.image_bytes = 200_000
    env = _env(fake_upstream, redis_url, key_prefix, shutdown_grace="10")
    proxy = await asyncio.to_thread(ProxyProcess(env).start)
    try:
        async with aiohttp.ClientSession() as session:

            async def post() -> tuple[int, str]:
                async with session.post(
                    f"{proxy.url}/chat/completions", json=BODY, headers={"Authorization": "Bearer sk-g"}
                ) as resp:
                    await resp.read()
                    return resp.status, resp.headers.get("X-Cache", "")

            in_flight = asyncio.create_task(post())
            await asyncio.sleep(0.5)
            exit_code = await asyncio.to_thread(proxy.terminate, 15)
            assert await in_flight == (200, "MISS")
        assert exit_code == 0, proxy.output()[-2000:]
        stored = [k async for k in redis_client.scan_iter(match=f"{key_prefix}:r1:*", count=1000)]
        assert len(stored) == 1, "the answer given during shutdown was not stored"
    finally:
        proxy.close()
