"""What the growth, soak and profile modes share: a private Redis, the upstream, proxies on demand.

Unlike the matrix these modes always start their own ``redis-server``: ``used_memory`` and the
purge of a namespace must be about this run's keys only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from bench.context import Options, Target, UpstreamControl
from bench.load import pick_generator
from bench.machine import ROOT
from bench.matrix import ProxyConfig
from bench.probes import delete_prefixed
from bench.procs import Child, stop
from bench.redis_server import private_redis
from bench.runner import RunSetup, connect_redis, new_run_id, start_proxy, start_upstream

RESULTS = ROOT / "bench" / "RESULTS.md"
OUT = ROOT / "bench" / "out"


def common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every mode has."""
    parser.add_argument("--loadgen", choices=("auto", "wrk", "aiohttp"), default="auto")
    parser.add_argument("--image-bytes", type=int, default=1_500_000, help="approximate PNG size")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT, help="raw JSON and child logs")


@dataclass(frozen=True, slots=True)
class RedisMemory:
    """``used_memory`` (every byte the server allocated) and ``used_memory_dataset`` (without
    client buffers and the server's own overhead: the keys and values)."""

    used: int
    dataset: int


@dataclass(frozen=True, slots=True)
class Running:
    """A proxy started by ``Stack.proxy``."""

    target: Target
    child: Child
    prefix: str  # its PROXY_REDIS_PREFIX

    @property
    def pid(self) -> int:
        """The proxy's root process."""
        return self.child.pid


@dataclass(slots=True)
class Stack:
    """A private Redis and the simulated upstream; proxies are started from it one at a time."""

    setup: RunSetup
    redis: aioredis.Redis
    redis_version: str
    upstream: Child
    session: aiohttp.ClientSession
    control: UpstreamControl
    opts: Options

    @contextlib.asynccontextmanager
    async def proxy(
        self, config: ProxyConfig, phase: str, env: Mapping[str, str] | None = None
    ) -> AsyncIterator[Running]:
        """A fresh proxy process for ``config``; stopped and its keys deleted afterwards. Its log
        is ``<out>/logs/<phase>-<config>.log``."""
        prefix = f"lcpbench:{self.opts.run_id}:{phase}:{config.slug}"
        log_name = f"{phase}-{config.slug}"
        child = await start_proxy(config, self.upstream, self.setup, prefix, env, log_name)
        target = Target(config.label, child.base, child.pid, config.workers, config.store, config.hot_cache)
        try:
            yield Running(target, child, prefix)
        finally:
            await stop(child)
            await delete_prefixed(self.redis, prefix)

    async def memory(self) -> RedisMemory:
        """Redis ``INFO memory``, once the keys deleted with ``UNLINK`` are freed (a background
        thread does that: ``lazyfree_pending_objects``, https://redis.io/docs/latest/commands/info/)."""
        for _ in range(100):
            info = await self.redis.info("memory")
            if not int(info.get("lazyfree_pending_objects", 0)):
                break
            await asyncio.sleep(0.05)
        return RedisMemory(int(info["used_memory"]), int(info["used_memory_dataset"]))


@contextlib.asynccontextmanager
async def stack(out_dir: Path, image_bytes: int, loadgen: str, duration: float = 5.0) -> AsyncIterator[Stack]:
    """Start everything; stop everything, whatever happens."""
    async with private_redis() as url:
        if url is None:
            raise SystemExit("bench: this mode needs a redis-server binary (apt-get install redis-server)")
        client, version = await connect_redis(url)
        if client is None:
            raise SystemExit(f"bench: the private Redis at {url} does not answer")
        setup = RunSetup(url, out_dir, image_bytes)
        opts = Options(
            duration=duration,
            concurrency=8,
            generator=pick_generator(loadgen),
            run_id=new_run_id(),
            miss_samples=0,
            image_bytes=image_bytes,
        )
        upstream = await start_upstream(setup)
        try:
            async with aiohttp.ClientSession() as session:
                control = UpstreamControl(session, upstream.base)
                yield Stack(setup, client, version, upstream, session, control, opts)
        finally:
            await stop(upstream)
            await client.aclose()


def stamp() -> str:
    """The time a section was measured, as the report shows it."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine (all cores, every process) so far, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    idle = fields[3] + fields[4]  # idle + iowait; guest time is already inside user (proc(5))
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")  # /proc/stat counts clock ticks


class Timer:
    """Wall seconds since creation."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def seconds(self) -> float:
        """Elapsed."""
        return time.monotonic() - self.started
