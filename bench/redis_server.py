"""A private ``redis-server`` for the bench, started in the bench's own session.

Why not the machine's Redis at 127.0.0.1:6379: it was started in another login session, and with
the kernel's scheduler autogroups (``/proc/sys/kernel/sched_autogroup_enabled`` = 1) a session
competes as one group. While the bench saturates both cores, that Redis sat runnable but
unscheduled for 150-650 ms at a time (``/proc/<pid>/schedstat`` wait time; a packet capture showed
its replies, not the proxy's requests, arriving late), which showed up as rare 0.25-1 s requests
in the two-worker cells. A Redis started here shares the bench's group, like a Redis on its own
host would not be starved by the load generator. ``PROXY_BENCH_REDIS_URL`` still picks any Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bench.procs import free_port

_READY_S = 10.0


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[str | None]:
    """The URL of a fresh, diskless redis-server on a free port; None without ``redis-server``."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="lcp-bench-redis-")
    process = await asyncio.create_subprocess_exec(
        binary,
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--dir", workdir),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        await _wait_ready(url, process)
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def _wait_ready(url: str, process: asyncio.subprocess.Process) -> None:
    client = aioredis.from_url(url)
    deadline = time.monotonic() + _READY_S
    try:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            with contextlib.suppress(RedisError, OSError):
                if await client.ping():
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server on {url} did not answer within {_READY_S:g} s")
    finally:
        await client.aclose()
