"""The state Redis (keys, budgets, reservations, ledger, RPM windows) and its eviction guard.

Cache entries may be evicted: they are rebuilt from the upstream. State may not: an evicted
budget hash reads as zero spend, an evicted key record makes the key unknown. Redis only evicts
keys when ``maxmemory`` is set and ``maxmemory-policy`` is not ``noeviction``; the ``volatile-*``
policies are no safer here, since the period hashes carry a TTL (Redis docs, "Key eviction").
The guard reads ``INFO memory`` (``maxmemory``, ``maxmemory_policy``), which managed Redis
services answer even where ``CONFIG`` is disabled.

- unsafe when the proxy starts: it refuses to start (``StateStoreUnsafe``);
- unreachable when it starts: it starts (requests BYPASS the cache as before), and checks on
  the first request of a key with a budget and every ``CHECK_INTERVAL_S`` after;
- found unsafe later: keys with a budget get 503, an ERROR is logged, and the verdict is reported
  as the ``state_store`` component of ``obs.health.Health`` (``/readyz`` body, ``llm_proxy_degraded``).

``PROXY_ALLOW_EVICTING_STATE_STORE=true`` turns the refusals off (documented as dangerous).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.budget.errors import state_store_unsafe
from proxy.storage.base import StoreUnavailable, guarded
from proxy.storage.cluster import is_cluster_url, open_cluster_client

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 60.0
UNREACHABLE_RETRY_S = 5.0
StateClient = aioredis.Redis | aioredis.RedisCluster


class StateStoreUnsafe(RuntimeError):
    """The state Redis can evict keys and budgets; the proxy refuses to start against it."""


@dataclass(frozen=True, slots=True)
class EvictionSettings:
    """What ``INFO memory`` says about eviction on one Redis node."""

    maxmemory: int
    policy: str

    @property
    def safe(self) -> bool:
        """Nothing is ever evicted: no memory limit, or a limit that refuses writes instead."""
        return self.maxmemory == 0 or self.policy == "noeviction"

    def problem(self) -> str:
        """Why this node is unsafe, naming the setting and the fix (for logs and 503 bodies)."""
        return (
            f"the state Redis has maxmemory {self.maxmemory} with maxmemory-policy {self.policy}, "
            "so it may evict managed keys, budgets and the spend ledger. Point PROXY_STATE_REDIS_URL "
            "(default: PROXY_REDIS_URL) at a Redis with maxmemory-policy noeviction (or maxmemory 0)."
        )


def eviction_settings(info: Mapping[str, Any]) -> list[EvictionSettings]:
    """Per node: a plain ``INFO memory`` reply, or a cluster's ``{node: reply}``."""
    if "maxmemory_policy" in info:
        return [EvictionSettings(int(info.get("maxmemory", 0)), str(info["maxmemory_policy"]))]
    return [
        found for reply in info.values() if isinstance(reply, Mapping) for found in eviction_settings(reply)
    ]


def open_state_client(url: str, timeout: float) -> StateClient:
    """A client of its own for ``PROXY_STATE_REDIS_URL`` (plain or cluster); nothing connects yet."""
    if is_cluster_url(url):
        return open_cluster_client(url, timeout)
    return aioredis.Redis.from_url(url, socket_connect_timeout=timeout)


class StateStoreGuard:
    """Knows whether the state Redis may evict, and refuses budget enforcement when it may.

    ``safe`` is the verdict: True, False, or None (not known yet: unreachable). ``report`` hears
    it as a short phrase (None when fine): the app passes ``Health.report`` for ``state_store``.
    """

    def __init__(
        self,
        client: StateClient | None,
        report: Callable[[str | None], None],
        *,
        timeout: float,
        allow_unsafe: bool,
    ) -> None:
        self.client = client
        self.report = report
        self.timeout = timeout
        self.allow_unsafe = allow_unsafe
        self.safe: bool | None = True if client is None else None  # memory mode evicts nothing
        self.problem: str | None = None
        self._checking: asyncio.Task[bool | None] | None = None

    async def _read(self) -> list[EvictionSettings]:
        assert self.client is not None
        async with guarded("INFO memory", self.timeout):
            if isinstance(self.client, RedisCluster):
                info = await self.client.info("memory", target_nodes=RedisCluster.PRIMARIES)
            else:
                info = await self.client.info("memory")
        return eviction_settings(info)

    async def check(self) -> bool | None:
        """Read the settings now; the verdict (None when Redis cannot be reached)."""
        if self.client is None:
            return True
        try:
            nodes = await self._read()
        except StoreUnavailable as exc:
            log.debug("state store eviction check failed: %s", type(exc.__cause__).__name__)
            if self.safe is not False:  # an evicting store stays reported as such
                self.report("unreachable")
            return self.safe
        unsafe = [node for node in nodes if not node.safe]
        was = self.safe
        self.safe = not unsafe
        self.problem = unsafe[0].problem() if unsafe else None
        self.report(f"may evict (maxmemory-policy {unsafe[0].policy})" if unsafe else None)
        if not self.safe and was is not False:
            note = " Enforced anyway: PROXY_ALLOW_EVICTING_STATE_STORE=true." if self.allow_unsafe else ""
            log.error("%s%s", self.problem, note)
        return self.safe

    async def at_start(self) -> None:
        """Refuse to start against an unsafe, reachable state Redis."""
        if await self.check() is False and not self.allow_unsafe:
            raise StateStoreUnsafe(f"refusing to start: {self.problem}")

    async def ensure_safe(self) -> None:
        """Request path, keys with a budget: free once known safe; 503 when it may evict."""
        if self.safe is None:
            # First contact after an unreachable start: one check, shared by concurrent callers.
            if self._checking is None or self._checking.done():
                self._checking = asyncio.ensure_future(self.check())
            await asyncio.shield(self._checking)
        if self.safe is False and not self.allow_unsafe:
            raise state_store_unsafe(self.problem or "the state Redis may evict keys.")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(UNREACHABLE_RETRY_S if self.safe is None else CHECK_INTERVAL_S)
            await self.check()

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """Re-check in the background while the app runs (a Redis reconfigured later is noticed)."""
        if self.client is None:
            yield
            return
        task = asyncio.create_task(self._watch(), name="state-store-guard")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self._checking is not None and not self._checking.done():
                self._checking.cancel()
