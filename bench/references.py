"""The bare reference server (``bench.bare``) as the runner drives it: start, load a body, target it."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from bench.context import CHAT_PATH, Target
from bench.matrix import Reference
from bench.procs import Child, child_env, free_port, spawn


def forward_target(bare: Child) -> Target:
    """``bare-forward``: the bare server's forwarder in front of the upstream (a miss's limit)."""
    return Target("bare-forward", bare.base, bare.pid, path="/forward" + CHAT_PATH, is_proxy=False)


class BareServer:
    """A running ``bench.bare`` and what it needs to answer like the proxy does."""

    def __init__(
        self, child: Child, session: aiohttp.ClientSession, redis: aioredis.Redis | None, prefix: str
    ) -> None:
        self.child = child
        self.session = session
        self.redis = redis
        self.prefix = prefix

    async def prepare(self, scenario: str, reference: Reference, body: bytes) -> Target:
        """Give the reference the proxy's answer for ``scenario``; the target to load it with."""
        if reference.from_redis:
            if self.redis is None:
                raise RuntimeError(f"{reference.kind} needs Redis")
            # One key holding the whole JSON body: the least a Redis-backed cache can read.
            await self.redis.set(self.prefix + scenario, body)
        else:
            async with self.session.put(f"{self.child.base}/_body/{scenario}", data=body) as response:
                response.raise_for_status()
        return Target(
            reference.kind,
            self.child.base,
            self.child.pid,
            store="redis" if reference.from_redis else "-",
            hot_cache=False,
            path=reference.path(scenario),
            is_proxy=False,
        )


async def start_bare(redis_url: str, prefix: str, log_path: Path, upstream_url: str) -> Child:
    """``python -m bench.bare`` on a free port, reading ``raw-redis-get`` bodies under ``prefix``
    and forwarding ``bare-forward`` requests to ``upstream_url``."""
    port = free_port()
    args = ["-m", "bench.bare", "--port", str(port), "--redis-url", redis_url, "--redis-prefix", prefix]
    args += ["--upstream-url", upstream_url]
    return await spawn("bare", args, child_env({}), log_path, f"http://127.0.0.1:{port}", "/_ready")
