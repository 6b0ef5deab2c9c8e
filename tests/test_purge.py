"""Cache purges match namespaces literally: ``*`` is a name, ``team`` is not ``team:x``, and
purging everything takes an explicit ``{"all": true}``. Redis and the memory store agree."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proxy.cache.keys import safe_namespace
from proxy.cache.response import ResponseCache
from proxy.storage.base import ByteStore
from proxy.storage.memory import MemoryStore
from proxy.storage.redis import RedisStore
from tests.e2e_helpers import chat_body, chat_raw
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import admin, create_key, managed_proxy
from tests.proxy_harness import ProxyServer

DIGEST = "ab" * 32


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest, redis_url: str, key_prefix: str) -> AsyncIterator[ByteStore]:
    """The same purge rules on both stores."""
    store: ByteStore = RedisStore(redis_url, 1.0) if request.param == "redis" else MemoryStore(1 << 20)
    yield store
    await store.close()


async def test_namespace_purge_is_literal_on_every_store(store: ByteStore, key_prefix: str) -> None:
    """Only ``{p}:r1:N:<digest>`` and ``{p}:r1:N.<sub>:<digest>`` belong to N; glob characters are names."""
    cache = ResponseCache(store, key_prefix)
    names = ["team", "team.sub", "team:x", "teamx", "te?m", "*", "t*", "[t]eam", "team.a.b", "team.sub:x"]
    for name in names:
        await store.set(f"{key_prefix}:r1:{name}:{DIGEST}", b"entry", 600)
    await store.set(f"{key_prefix}:r1:team:not-a-digest", b"entry", 600)

    async def left() -> set[str]:
        """Namespaces of the entries still stored (the odd one out as its whole remaining key)."""
        found = await store.keys_with_prefix(f"{key_prefix}:r1:")
        return {key.removeprefix(f"{key_prefix}:r1:").removesuffix(f":{DIGEST}") for key in found}

    assert await cache.purge_namespace("t*") == 1  # only the namespace literally named "t*"
    assert await cache.purge_namespace("*") == 1
    assert await cache.purge_namespace("te?m") == 1
    rest = {"team:x", "teamx", "[t]eam", "team.a.b", "team.sub:x", "team:not-a-digest"}
    assert await left() == rest | {"team", "team.sub"}
    assert await cache.purge_namespace("team") == 2  # itself and its sub-namespace "sub"
    assert await left() == rest
    assert await cache.purge_all() == len(rest)
    assert await left() == set()


def test_namespaces_never_contain_structure_characters() -> None:
    """``:`` and ``.`` (and glob characters) are hashed away, so no namespace looks like another's child."""
    for raw in ("team:x", "team.x", "a*", "[x]", "t?"):
        safe = safe_namespace(raw)
        assert safe.startswith("h-")
        assert not set(safe) & set(":.*?[]")
    assert safe_namespace("team-a_1") == "team-a_1"


@pytest.fixture(params=["redis", "memory"])
async def proxy(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> AsyncIterator[ProxyServer]:
    """A managed proxy on Redis or on the memory store."""
    async with managed_proxy(
        fake_upstream, redis_url if request.param == "redis" else None, key_prefix
    ) as server:
        yield server


async def test_purging_team_keeps_team_x_and_star_deletes_nothing(proxy: ProxyServer) -> None:
    """Keys naming namespaces "team" and "team:x": purging one leaves the other cached; ``*``
    purges nothing; ``{"all": true}`` purges everything."""
    team, team_secret = await create_key(proxy, cache_namespace="team")
    _, other_secret = await create_key(proxy, cache_namespace="team:x")
    body = chat_body("shared question")
    for secret in (team_secret, other_secret):
        assert (await chat_raw(proxy, body, api_key=secret)).headers["X-Cache"] == "MISS"
        sub = await chat_raw(proxy, body, api_key=secret, headers={"X-Cache-Namespace": "sub"})
        assert sub.headers["X-Cache"] == "MISS"

    star = await admin(proxy, "POST", "/cache/purge", {"namespace": "*"})
    assert star.json() == {"deleted": 0, "namespace": "*"}
    purged = await admin(proxy, "POST", "/cache/purge", {"namespace": team["effective_cache_namespace"]})
    assert purged.json()["deleted"] == 2  # its entry and its "sub" sub-namespace
    assert (await chat_raw(proxy, body, api_key=team_secret)).headers["X-Cache"] == "MISS"
    assert (await chat_raw(proxy, body, api_key=other_secret)).headers["X-Cache"] == "HIT"
    sub = await chat_raw(proxy, body, api_key=other_secret, headers={"X-Cache-Namespace": "sub"})
    assert sub.headers["X-Cache"] == "HIT"

    everything = await admin(proxy, "POST", "/cache/purge", {"all": True})
    assert everything.json() == {"deleted": 3, "all": True}  # team (cached again), team:x and its sub
    assert (await chat_raw(proxy, body, api_key=other_secret)).headers["X-Cache"] == "MISS"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"all": False},
        {"all": "yes"},
        {"namespace": ""},
        {"namespace": 5},
        {"key_hash": "*"},
        {"key_hash": "ab"},
        {"namespace": "a", "all": True},
    ],
)
async def test_purge_requests_that_say_nothing_precise_are_400(
    proxy: ProxyServer, body: dict[str, object]
) -> None:
    """Purging everything must be asked for exactly; other selectors must be well-formed."""
    reply = await admin(proxy, "POST", "/cache/purge", body)
    assert reply.status == 400, reply.body
    assert reply.json()["error"]["type"] == "invalid_request_error"
