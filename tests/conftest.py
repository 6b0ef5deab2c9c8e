"""Shared fixtures: a real Redis (never skipped) and a unique key prefix per test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        ok = bool(client.ping())
        client.close()
    except (redis.RedisError, OSError):
        return False
    return ok


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A reachable Redis: PROXY_TEST_REDIS_URL, else 127.0.0.1:6379, else one we start.

    Fails the run (never skips) when none can be had.
    """
    explicit = os.environ.get("PROXY_TEST_REDIS_URL")
    if explicit:
        if not _answers(explicit):
            pytest.fail(f"PROXY_TEST_REDIS_URL={explicit} does not answer PING", pytrace=False)
        yield explicit
        return
    default = "redis://127.0.0.1:6379/0"
    if _answers(default):
        yield default
        return
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail(
            "No Redis: 127.0.0.1:6379 does not answer, PROXY_TEST_REDIS_URL is unset and "
            "redis-server is not installed (apt-get install redis-server).",
            pytrace=False,
        )
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="lcp-redis-")
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _answers(url):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"started redis-server on port {port} but it never answered", pytrace=False)
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix no other test uses, so tests never see each other's keys."""
    return f"lcptest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_client(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A redis-py asyncio client; deletes this test's keys afterwards."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    async for key in client.scan_iter(match=f"{key_prefix}*", count=1000):
        await client.delete(key)
    await client.aclose()


# --- the fake upstream and the proxy under test -------------------------------------------

from tests.fake_upstream import FakeUpstream, fake_upstream_fixture  # noqa: E402
from tests.proxy_harness import ProxyServer, proxy_settings  # noqa: E402

fake_upstream = pytest.fixture(fake_upstream_fixture)


@pytest.fixture
async def proxy(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, redis_client: aioredis.Redis
) -> AsyncIterator[ProxyServer]:
    """The proxy on a free port, Redis-backed (this test's prefix), in front of the fake upstream."""
    async with ProxyServer(proxy_settings(fake_upstream.url, redis_url, key_prefix)) as server:
        yield server
