"""Redis Cluster as the byte store (``redis+cluster://host:port[,host:port]``).

aiocache has no cluster backend, so every call goes through redis-py's asyncio ``RedisCluster``.
Keys of one entry's blobs live in many slots: reads use ``MGET`` split per slot, writes are
single-key commands in a non-transactional cluster pipeline (see ``RedisClientOps``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from proxy.storage.base import guarded
from proxy.storage.redis import RedisClientOps

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True, slots=True)
class ClusterSeed:
    """What a ``redis+cluster://`` URL names: startup nodes, credentials and TLS."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster seed rather than one Redis."""
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterSeed:
    """``redis+cluster://[user:pass@]host:port[,host:port...]`` (``rediss+cluster`` for TLS).

    Parsed by hand: ``urlparse`` cannot take several hosts in one netloc.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a Redis Cluster URL: scheme must be one of {CLUSTER_SCHEMES}")
    netloc = rest.split("/", 1)[0]
    userinfo, at, hosts = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("Redis Cluster URL needs host:port for every startup node")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterSeed(tuple(nodes), username, password, scheme == "rediss+cluster")


class ProxyRedisCluster(RedisCluster):
    """``RedisCluster`` that learns the slot map before running a first command.

    Its "cluster unreachable" failures (``RedisClusterException``, not a ``RedisError``: no startup
    node answers, a slot has no live primary) are outages like any other: ``storage.base.guarded``
    turns them into ``StoreUnavailable`` with the rest.
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            # redis-py 8.1 resolves a command's routing policy (on a startup node) before it
            # discovers the slot map; a burst of first commands on a cold client then races
            # the discovery and some fail with AttributeError. Discover first, once, locked.
            await self.initialize()
        return await super().execute_command(*args, **kwargs)


def open_cluster_client(url: str, timeout: float) -> ProxyRedisCluster:
    """The cluster client for a ``redis+cluster://`` URL.

    Nothing connects here (the proxy must start while Redis is down): the client discovers the
    slot map on its first command.
    """
    seed = parse_cluster_url(url)
    return ProxyRedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in seed.nodes],
        username=seed.username,
        password=seed.password,
        ssl=seed.ssl,
        socket_connect_timeout=timeout,
        # Image blobs are ~1.5 MB: see RedisStore.
        socket_read_size=1 << 20,
    )


class ClusterStore(RedisClientOps):
    """The ByteStore on a Redis Cluster; ``client`` also serves Lua scripts and pipelines."""

    client: RedisCluster

    def __init__(self, url: str, timeout: float) -> None:
        self.timeout = timeout
        self.seed = parse_cluster_url(url)
        self._subscribed = 0  # subscriber() calls so far: picks the next startup node
        self.client = open_cluster_client(url, timeout)

    def subscriber(self) -> aioredis.Redis:
        """A plain client on one startup node, for pub/sub (the next one on every call).

        A PUBLISH anywhere in a cluster reaches every node, so one node's subscription hears
        all; rotating means a listener reconnecting after its node died tries another one.
        """
        host, port = self.seed.nodes[self._subscribed % len(self.seed.nodes)]
        self._subscribed += 1
        return aioredis.Redis(
            host=host,
            port=port,
            username=self.seed.username,
            password=self.seed.password,
            ssl=self.seed.ssl,
            socket_connect_timeout=self.timeout,
        )

    async def get(self, key: str) -> bytes | None:
        async with guarded("GET", self.timeout):
            value = await self.client.get(key)
            # Built without decode_responses: always bytes; the str half of the type is moot.
            return value.encode() if isinstance(value, str) else value

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        async with guarded("MGET", self.timeout):
            values: list[bytes | None] = await self.client.mget_nonatomic(list(keys))
            return values

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        async with guarded("SET", self.timeout * 4):
            await self.client.set(key, value, ex=ttl)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: int) -> None:
        """Every value in one pipeline of single-key ``SET … EX`` (the keys live in many slots)."""
        if not items:
            return
        async with guarded("SET", self.timeout * 4), self.client.pipeline(transaction=False) as pipe:
            for key, value in items:
                pipe.set(key, value, ex=ttl)
            await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()
