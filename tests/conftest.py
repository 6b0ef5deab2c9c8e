"""Shared fixtures: a real Redis (never skipped) and a unique key prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.fake_upstream import FakeUpstream, fake_upstream_fixture
from tests.hang_report import pytest_runtest_protocol  # noqa: F401 - a hook, registered by import
from tests.proxy_harness import ProxyServer, free_port, proxy_settings
from tests.redis_process import RedisProcess, answers, delete_prefix


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A reachable Redis: PROXY_TEST_REDIS_URL, else 127.0.0.1:6379, else one we start.

    Fails the run (never skips) when none can be had.
    """
    explicit = os.environ.get("PROXY_TEST_REDIS_URL")
    if explicit:
        if not answers(explicit):
            pytest.fail(f"PROXY_TEST_REDIS_URL={explicit} does not answer PING", pytrace=False)
        yield explicit
        return
    default = "redis://127.0.0.1:6379/0"
    if answers(default):
        yield default
        return
    server = RedisProcess(free_port()).start()
    yield server.url
    server.remove()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A Redis key prefix no other test uses; every key under it is deleted after the test."""
    prefix = f"lcptest-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
async def redis_client(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A redis-py asyncio client on the test Redis (``key_prefix`` cleans up the keys)."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


# --- the fake upstream and the proxy under test -------------------------------------------


fake_upstream = pytest.fixture(fake_upstream_fixture)


@pytest.fixture
async def proxy(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> AsyncIterator[ProxyServer]:
    """The proxy on a free port, Redis-backed (this test's prefix), in front of the fake upstream."""
    async with ProxyServer(proxy_settings(fake_upstream.url, redis_url, key_prefix)) as server:
        yield server
