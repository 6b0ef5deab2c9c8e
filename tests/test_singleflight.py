"""Single flight: identical concurrent misses cost one upstream call, in one proxy and across two."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import aiohttp
import openai
import pytest
import redis.asyncio as aioredis

from proxy.flight.flights import RedisFlights, SingleFlight, listening
from tests.fake_upstream import FakeUpstream, png_of
from tests.proxy_harness import ProxyServer, proxy_settings
from tests.redis_process import RedisProcess
from tests.test_redis_sizing import private_redis

__all__ = ["private_redis"]  # the fixture, shared with the sizing tests

IMAGE_MODEL = "gemini-2.5-flash-image-preview"
TEXT_MODEL = "gpt-4o-mini"


def _body(prompt: str, **extra: object) -> dict[str, object]:
    return {"model": IMAGE_MODEL, "messages": [{"role": "user", "content": prompt}]} | extra


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, object]) -> tuple[int, str, bytes]:
    async with session.post(
        f"{url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-tenant-a"}
    ) as resp:
        return resp.status, resp.headers.get("X-Cache", ""), await resp.read()


async def test_32_concurrent_identical_image_misses_make_one_upstream_call(
    fake_upstream: FakeUpstream, proxy: ProxyServer
) -> None:
    """32 identical concurrent image requests through one proxy → 1 upstream call, identical bodies."""
    fake_upstream.state.latency_s = 0.3
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*[_post(session, proxy.url, _body("burst")) for _ in range(32)])
    assert fake_upstream.chat_calls == 1
    assert {status for status, _, _ in results} == {200}
    caches = [cache for _, cache, _ in results]
    assert caches.count("MISS") == 1
    assert caches.count("COALESCED") == 31
    assert len({body for _, _, body in results}) == 1


async def test_streaming_followers_get_a_replayed_stream_with_the_image(
    fake_upstream: FakeUpstream, proxy: ProxyServer
) -> None:
    """Followers that asked for a stream get valid SSE replaying the leader's image."""
    fake_upstream.state.latency_s = 0.3
    fake_upstream.state.image_bytes = 200_000
    client = openai.AsyncOpenAI(base_url=proxy.url, api_key="sk-tenant-a", max_retries=0)

    async def one_stream() -> bytes:
        stream = await client.chat.completions.create(
            model=IMAGE_MODEL, messages=[{"role": "user", "content": "streamed burst"}], stream=True
        )
        images: list[bytes] = []
        async for chunk in stream:
            for choice in chunk.choices:
                for image in getattr(choice.delta, "images", None) or []:
                    images.append(png_of(image["image_url"]["url"]))
        assert len(images) == 1
        return images[0]

    pngs = await asyncio.gather(*[one_stream() for _ in range(8)])
    await client.close()
    assert fake_upstream.chat_calls == 1
    assert len(set(pngs)) == 1


async def test_two_proxies_sharing_redis_make_one_upstream_call(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: object
) -> None:
    """Two proxy replicas on different ports sharing one Redis coalesce a burst into 1 call."""
    fake_upstream.state.latency_s = 0.5
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix)
    async with (
        ProxyServer(settings) as first,
        ProxyServer(dataclasses.replace(settings, port=0)) as second,
        aiohttp.ClientSession() as session,
    ):
        tasks = [_post(session, first.url, _body("replicas")) for _ in range(16)]
        tasks += [_post(session, second.url, _body("replicas")) for _ in range(16)]
        results = await asyncio.gather(*tasks)
    assert fake_upstream.chat_calls == 1
    assert len({body for _, _, body in results}) == 1
    assert sorted(cache for _, cache, _ in results).count("MISS") == 1


async def test_shareable_upstream_error_is_given_to_followers_without_more_calls(
    fake_upstream: FakeUpstream, proxy: ProxyServer
) -> None:
    """A 400 from the upstream goes to every follower; nobody pays for a second call."""
    fake_upstream.state.latency_s = 0.3
    error = {"message": "bad prompt", "type": "invalid_request_error", "param": None, "code": None}
    fake_upstream.state.fail_next.append((400, {"error": error}))
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*[_post(session, proxy.url, _body("bad")) for _ in range(8)])
    assert fake_upstream.chat_calls == 1
    assert {status for status, _, _ in results} == {400}
    assert all(b"bad prompt" in body for _, _, body in results)


async def test_retryable_upstream_error_is_retried_by_one_follower(
    fake_upstream: FakeUpstream, proxy: ProxyServer
) -> None:
    """A 503 for the leader is not copied: one follower retries, the rest coalesce on its answer."""
    fake_upstream.state.latency_s = 0.3
    fake_upstream.state.fail_next.append(
        (503, {"error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}})
    )
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*[_post(session, proxy.url, _body("flaky")) for _ in range(8)])
    assert fake_upstream.chat_calls == 2
    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(503) == 1
    assert statuses.count(200) == 7


@pytest.mark.parametrize("disconnect_after", [0.1])
async def test_client_that_disconnects_still_gets_the_generation_stored(
    fake_upstream: FakeUpstream, proxy: ProxyServer, disconnect_after: float
) -> None:
    """A client gone after 100 ms: the paid generation is finished and stored; next request is a HIT."""
    fake_upstream.state.latency_s = 0.6
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(disconnect_after):
                await _post(session, proxy.url, _body("walk away"))
    await asyncio.sleep(1.0)
    async with aiohttp.ClientSession() as session:
        status, cache, _ = await _post(session, proxy.url, _body("walk away"))
    assert status == 200
    assert cache == "HIT"
    assert fake_upstream.chat_calls == 1


async def _flight_messages(pubsub: aioredis.client.PubSub, settle_s: float = 0.5) -> list[bytes]:
    """Every flight announcement received within ``settle_s`` (announcements follow the replies)."""
    messages: list[bytes] = []
    deadline = asyncio.get_running_loop().time() + settle_s
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            messages.append(message["data"])
    return messages


async def test_outcomes_are_published_only_when_another_replica_waits(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    """A flight nobody else waits for ends without a pub/sub message (no replica parses one per
    miss); when a follower on another replica waits, the outcome is published exactly once and
    reaches it."""
    fake_upstream.state.latency_s = 0.5
    settings = proxy_settings(fake_upstream.url, redis_url, key_prefix)
    async with (
        ProxyServer(settings) as first,
        ProxyServer(dataclasses.replace(settings, port=0)) as second,
        aiohttp.ClientSession() as session,
        redis_client.pubsub() as pubsub,
    ):
        await pubsub.subscribe(f"{key_prefix}:flights")
        status, cache, _ = await _post(session, first.url, _body("nobody else asks"))
        assert (status, cache) == (200, "MISS")
        assert await _flight_messages(pubsub) == []

        leader = asyncio.create_task(_post(session, first.url, _body("two replicas ask")))
        await asyncio.sleep(0.2)  # the first replica now holds the flight lock
        follower = await _post(session, second.url, _body("two replicas ask"))
        assert (await leader)[:2] == (200, "MISS")
        assert follower[:2] == (200, "COALESCED")
        messages = await _flight_messages(pubsub)
        assert len(messages) == 1
        assert messages[0].endswith(b" stored")
    assert fake_upstream.chat_calls == 2


async def test_flight_listener_stops_although_redis_py_can_swallow_a_cancel(
    redis_url: str, key_prefix: str
) -> None:
    """Shutdown always ends the pub/sub listener, even when it is cancelled mid-connect.

    redis-py's handshake runs through ``asyncio.wait_for``, which on Python 3.11 loses a cancel
    that lands as its inner call completes; with a single ``cancel()`` about one stop in ten hung
    here (and a test proxy's teardown with it). 60 start/stop cycles at random moments of the
    connect must each end within a second.
    """
    rng = random.Random(1234)
    for _ in range(60):
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=0.25)
        flights = SingleFlight(RedisFlights(client, key_prefix, 30.0), max_wait=5.0)
        try:
            started = asyncio.get_running_loop().time()
            async with listening(flights, grace=1.0):
                await asyncio.sleep(rng.random() * 0.01)
            assert asyncio.get_running_loop().time() - started < 1.5
        finally:
            await client.aclose()


async def test_a_led_miss_costs_two_redis_round_trips(
    fake_upstream: FakeUpstream, private_redis: RedisProcess
) -> None:
    """On plain Redis a text miss that leads its flight makes two calls: the claim (entry or lock) and
    the flight's end script, which stores the entry record, drops the lock and would announce; no
    separate SET. The entry is there with its TTL, the lock is gone, a hit follows.

    Redis counts the commands a script runs too: GET entry + SET NX lock (claim), then SET entry,
    GET + DEL lock, DEL waiters (end); a separate store would add a third SET and a call."""
    settings = proxy_settings(fake_upstream.url, private_redis.url, "rt")
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        async with ProxyServer(settings) as proxy, aiohttp.ClientSession() as session:
            assert (
                await _post(session, proxy.url, _body("warm the scripts and the caller", model=TEXT_MODEL))
            )[1] == "MISS"
            await asyncio.sleep(0.2)  # the first flight's end runs in the background
            await client.config_resetstat()
            assert (await _post(session, proxy.url, _body("counted", model=TEXT_MODEL)))[:2] == (200, "MISS")
            await asyncio.sleep(0.2)
            stats = await client.info("commandstats")
            entries = [key async for key in client.scan_iter("rt:r1:*", count=1000)]
            locks = [key async for key in client.scan_iter("rt:lock:*", count=1000)]
            ttls = [await client.ttl(key) for key in entries]
            assert (await _post(session, proxy.url, _body("counted", model=TEXT_MODEL)))[:2] == (200, "HIT")
    finally:
        await client.aclose()
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    assert calls.get("evalsha") == 2, calls
    calls.pop("config|resetstat", None)
    assert calls == {"evalsha": 2, "get": 2, "set": 2, "del": 2}, calls
    assert len(entries) == 2
    assert all(0 < ttl <= settings.cache_ttl for ttl in ttls)
    assert locks == []
