"""Runs the matrix: upstream and bare references once, direct baselines, then each proxy
configuration in turn (its targets' references interleaved with it, see ``bench.throughput``)."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bench.context import Options, Target, UpstreamControl
from bench.matrix import DIRECT_SCENARIOS, THROUGHPUT_SCENARIOS, Cell, ProxyConfig, reference_for
from bench.probes import coalesce, delete_prefixed, images_redis_memory, miss_latency, redis_memory
from bench.procs import Child, child_env, free_port, log_errors, spawn, stop
from bench.references import BareServer, forward_target, start_bare
from bench.results import RunResults, ThroughputResult
from bench.throughput import run_throughput

# A scenario that fails is reported and the run goes on with the next one.
_SCENARIO_ERRORS = (aiohttp.ClientError, RedisError, RuntimeError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class RunSetup:
    """Where things are and how big the images are."""

    redis_url: str
    out_dir: Path
    image_bytes: int


def log(message: str) -> None:
    """Progress on stderr (stdout stays free for callers)."""
    print(message, file=sys.stderr, flush=True)


async def start_upstream(setup: RunSetup) -> Child:
    """``bench.upstream`` on a free port, upstream latency 0."""
    port = free_port()
    args = ["-m", "bench.upstream", "--port", str(port), "--image-bytes", str(setup.image_bytes)]
    log_path = setup.out_dir / "logs" / "upstream.log"
    return await spawn("upstream", args, child_env({}), log_path, f"http://127.0.0.1:{port}", "/_stats")


async def start_proxy(
    config: ProxyConfig,
    upstream: Child,
    setup: RunSetup,
    prefix: str,
    env: Mapping[str, str] | None = None,
    log_name: str = "",
) -> Child:
    """``python -m proxy serve`` for one configuration, with its own Redis key prefix (``env``:
    more ``PROXY_*`` settings, e.g. an admin token; ``log_name``: its log file's name)."""
    port = free_port()
    args = ["-m", "proxy", "serve", "--workers", str(config.workers), "--port", str(port)]
    args += ["--upstream-url", upstream.base + "/v1", "--log-level", "warning"]
    extra = {"PROXY_REDIS_PREFIX": prefix, "PROXY_SHUTDOWN_GRACE": "2", "PROXY_UPSTREAM_TIMEOUT": "60"}
    extra.update(env or {})
    if config.store == "redis":
        args += ["--redis-url", setup.redis_url]
    if not config.hot_cache:
        extra["PROXY_HOT_CACHE_BYTES"] = "0"  # honoured once the proxy has a hot tier
    log_path = setup.out_dir / "logs" / f"{log_name or 'proxy-' + config.slug}.log"
    return await spawn(
        f"proxy {config.label}", args, child_env(extra), log_path, f"http://127.0.0.1:{port}", "/healthz"
    )


def summary(row: ThroughputResult) -> str:
    """One progress line of a throughput row."""
    load = row.load
    status = "ok" if not row.problems else "FAIL " + "; ".join(row.problems)
    runs = " (best of " + "/".join(f"{r.rps:,.0f}" for r in row.runs) + ")" if len(row.runs) > 1 else ""
    return (
        f"{row.load.rps:9,.0f} req/s  p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms  "
        f"cpu {row.cpu_ms_per_request:.3f} ms/req  {status}{runs}"
    )


class Runner:
    """Holds the shared pieces of one run; ``run`` fills ``results``."""

    def __init__(self, opts: Options, setup: RunSetup, redis_client: aioredis.Redis | None) -> None:
        self.opts = opts
        self.setup = setup
        self.redis = redis_client
        self.results = RunResults()

    async def run(self, cells: Sequence[Cell]) -> RunResults:
        """Everything, always stopping what it started."""
        upstream = await start_upstream(self.setup)
        bare_prefix = f"lcpbench:{self.opts.run_id}:bare:"
        try:
            async with contextlib.AsyncExitStack() as stack:
                session = await stack.enter_async_context(aiohttp.ClientSession())
                control = UpstreamControl(session, upstream.base)
                direct = Target("direct", upstream.base, upstream.pid, is_proxy=False)
                bare = None
                if any(
                    s == "miss_latency" or reference_for(s, c.config.label)
                    for c in cells
                    for s in c.scenarios
                ):
                    log_path = self.setup.out_dir / "logs" / "bare.log"
                    child = await start_bare(self.setup.redis_url, bare_prefix, log_path, upstream.base)
                    stack.push_async_callback(stop, child)
                    bare = BareServer(child, session, self.redis, bare_prefix)
                await self._direct_baselines(cells, direct, control, session)
                for cell in cells:
                    await self._cell(cell, upstream, direct, control, session, bare)
        finally:
            await stop(upstream)
            if self.redis is not None:
                await delete_prefixed(self.redis, bare_prefix)
        return self.results

    async def _direct_baselines(
        self, cells: Sequence[Cell], direct: Target, control: UpstreamControl, session: aiohttp.ClientSession
    ) -> None:
        kinds = {s: None for c in cells for s in c.scenarios if s in DIRECT_SCENARIOS}
        for kind in kinds:
            try:
                rows = await run_throughput(kind, direct, self.opts, control, session)
            except _SCENARIO_ERRORS as exc:
                self.results.errors.append(f"direct {kind}: {exc!r}")
                log(f"[direct]            {kind:17} ERROR {exc!r}")
                continue
            self.results.throughput += rows
            log(f"[direct]            {kind:17} {summary(rows[0])}")

    async def _cell(
        self,
        cell: Cell,
        upstream: Child,
        direct: Target,
        control: UpstreamControl,
        session: aiohttp.ClientSession,
        bare: BareServer | None,
    ) -> None:
        config = cell.config
        if config.store == "redis" and self.redis is None:
            self.results.errors.append(
                f"{config.label}: skipped, Redis not reachable at {self.setup.redis_url}"
            )
            return
        prefix = f"lcpbench:{self.opts.run_id}:{config.slug}"
        proxy = await start_proxy(config, upstream, self.setup, prefix)
        target = Target(config.label, proxy.base, proxy.pid, config.workers, config.store, config.hot_cache)
        try:
            for scenario in cell.scenarios:
                try:
                    await self._scenario(scenario, target, direct, control, session, prefix, bare)
                except _SCENARIO_ERRORS as exc:
                    self.results.errors.append(f"{config.label} {scenario}: {exc!r}")
                    log(f"[{config.label:17}] {scenario:17} ERROR {exc!r}")
        finally:
            await stop(proxy)
            self.results.proxy_log_errors[config.label] = log_errors(proxy)
            if self.redis is not None and config.store == "redis":
                await delete_prefixed(self.redis, prefix)

    async def _scenario(
        self,
        scenario: str,
        target: Target,
        direct: Target,
        control: UpstreamControl,
        session: aiohttp.ClientSession,
        prefix: str,
        bare: BareServer | None,
    ) -> None:
        head = f"[{target.label:17}] {scenario:17}"
        if scenario in THROUGHPUT_SCENARIOS:
            rows = await run_throughput(scenario, target, self.opts, control, session, bare)
            self.results.throughput += rows
            for row in rows:
                name = target.label if row is rows[0] else row.target
                log(f"[{name:17}] {scenario:17} {summary(row)}")
        elif scenario == "miss_latency":
            forward = forward_target(bare.child) if bare is not None else None
            miss = await miss_latency(target, direct, self.opts, control, forward)
            self.results.miss_latency.append(miss)
            limit = (
                "" if miss.forward_p50_ms is None else f", bare-forward {miss.forward_added_p50_ms:+.3f} ms"
            )
            log(
                f"{head} proxy p50 {miss.proxy_p50_ms:.3f} ms / direct p50 {miss.direct_p50_ms:.3f} ms"
                f" -> added {miss.added_p50_ms:+.3f} ms (p99 {miss.added_p99_ms:+.3f} ms){limit}"
            )
        elif scenario == "coalesce32":
            flight = await coalesce(target, self.opts, control)
            self.results.coalesce.append(flight)
            log(
                f"{head} {flight.upstream_calls} upstream call(s), "
                f"X-Cache {flight.x_cache} {flight.problems or ''}"
            )
        elif scenario in ("redis_memory", "images_redis_memory") and self.redis is not None:
            probe = redis_memory if scenario == "redis_memory" else images_redis_memory
            memory = await probe(target, self.opts, session, self.redis, prefix)
            self.results.redis_memory.append(memory)
            log(
                f"{head} {memory.total_bytes:,} B in Redis for a {memory.png_bytes:,} B PNG "
                f"({memory.ratio:.3f}x)"
            )


async def connect_redis(url: str) -> tuple[aioredis.Redis | None, str]:
    """A client and the server version, or (None, '') when Redis does not answer."""
    client = aioredis.from_url(url)
    try:
        info = await client.info("server")
    except (RedisError, OSError):
        await client.aclose()
        return None, ""
    return client, str(info.get("redis_version", "unknown"))


def new_run_id() -> str:
    """Short unique id: prompts and Redis prefixes of this run never meet an earlier run's."""
    return uuid.uuid4().hex[:8]
