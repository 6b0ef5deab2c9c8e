"""``python -m bench console``: the console's image list with 10,000 cached entries.

Fills the image index directly through its API (rows plus a stand-in entry record each, so the
page's existence check finds them), on the in-memory store and on Redis, then times
``GET /ui/api/images`` (the first page, and the last) through HTTP with a logged-in session.
The reference is the same request with 100 entries, measured in the same run: a page must cost
O(page), not O(entries), so the ratio should stay near 1. Writes the ``console`` section of
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import socket
import statistics
import time
import uuid
from collections.abc import Sequence

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from bench.machine import ROOT
from bench.sections import put_section
from proxy.app import create_app
from proxy.cache.index import ImageRow
from proxy.config import Secret, Settings
from proxy.sim.simulator import SimulatorState, start_simulator
from proxy.state import IMAGE_INDEX, STORE

TOKEN = "bench-console-admin-token-0123456789"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rows(count: int, now: float) -> list[ImageRow]:
    rows = []
    for i in range(count):
        digest = hashlib.sha256(f"entry-{i}".encode()).hexdigest()
        rows.append(
            ImageRow(
                id=f"bench:{digest}",
                model="gemini-2.5-flash-image-preview",
                excerpt=f"prompt number {i} " * 8,
                created=now - count + i,
                expires=now + 3600,
                size=1_500_000,
                cost_micro=39_000,
                images=1,
                sha256=hashlib.sha256(f"blob-{i}".encode()).hexdigest(),
                blob_size=1_400_000,
                hits=i % 7,
            )
        )
    return rows


async def _measure(redis_url: str | None, count: int, samples: int) -> dict[str, float]:
    prefix = f"lcpbench-console-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        redis_url=redis_url, redis_prefix=prefix, admin_token=Secret(TOKEN), upstream_prices=False
    )
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        now = time.time()
        rows = _rows(count, now)
        store = app[STORE]
        await store.set_many([(f"{prefix}:r1:{row.id}", b"stand-in entry") for row in rows], 3600)
        await app[IMAGE_INDEX].rows.add(rows, now)
        timings: dict[str, float] = {}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.post(
                f"{base}/ui/login", data={"token": TOKEN}, headers={"Origin": base}, allow_redirects=False
            ) as login:
                assert login.status == 303, login.status
            for name, offset in (("first page", 0), ("last page", max(0, count - 24))):
                url = f"{base}/ui/api/images?offset={offset}&limit=24"
                spent = []
                for _ in range(samples):
                    started = time.perf_counter()
                    async with session.get(url) as response:
                        body = await response.json()
                    spent.append(time.perf_counter() - started)
                    assert len(body["data"]) == min(24, count - offset), len(body["data"])
                timings[name] = statistics.median(spent) * 1000
        return timings
    finally:
        await runner.cleanup()
        if redis_url is not None:
            client = aioredis.Redis.from_url(redis_url)
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()


async def _hits(upstream: str, console: bool, count: int) -> float:
    """Median seconds of ``count`` sequential hot image hits (200 KB PNG) on a fresh proxy."""
    settings = Settings(
        upstream_url=upstream,
        upstream_prices=False,
        admin_token=Secret(TOKEN) if console else None,
        auth="passthrough",
    )
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    port = _port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    body = {"model": "gemini-2.5-flash-image-preview", "messages": [{"role": "user", "content": "hit me"}]}
    headers = {"Authorization": "Bearer sk-bench-console"}
    try:
        async with aiohttp.ClientSession() as session:
            spent = []
            for i in range(count + 1):
                started = time.perf_counter()
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers
                ) as response:
                    await response.read()
                    assert response.headers["X-Cache"] == ("MISS" if i == 0 else "HIT")
                if i:
                    spent.append(time.perf_counter() - started)
        return statistics.median(spent)
    finally:
        await runner.cleanup()


async def _hit_cost(pairs: int, count: int) -> str:
    """Hot hits with the console on (index + stats counted per hit) vs off, alternated in pairs."""
    state = SimulatorState()
    state.image_bytes = 200_000
    sim, upstream = await start_simulator(state)
    try:
        off, on = [], []
        for _ in range(pairs):
            off.append(await _hits(upstream, False, count))
            on.append(await _hits(upstream, True, count))
    finally:
        await sim.cleanup()
    best_off, best_on = min(off), min(on)
    return "\n".join(
        [
            "",
            f"Hot image hit (200 KB PNG, in-memory store, sequential, best median of {pairs} alternated"
            f" runs of {count}): console off {best_off * 1000:.3f} ms, console on {best_on * 1000:.3f} ms,"
            f" ratio {best_on / best_off:.3f} (the console adds two in-process counters per hit, no I/O).",
        ]
    )


async def _run(redis_url: str, entries: int, samples: int, hit_pairs: int = 5) -> str:
    lines = [
        "## Console image list (`python -m bench console`)",
        "",
        f"`GET /ui/api/images` (24 rows, logged-in session, over loopback HTTP), median of {samples}"
        f" requests, with {entries:,} indexed entries vs 100 (the reference, same run).",
        "",
        "| store | page | 100 entries (ms) | " + f"{entries:,} entries (ms) | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for store, url in (("memory", None), ("redis", redis_url)):
        small = await _measure(url, 100, samples)
        large = await _measure(url, entries, samples)
        for page in ("first page", "last page"):
            ratio = large[page] / small[page]
            lines.append(f"| {store} | {page} | {small[page]:.2f} | {large[page]:.2f} | {ratio:.2f} |")
    if hit_pairs:
        lines.append(await _hit_cost(hit_pairs, 300))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench console", description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="a Redis the bench may write (own prefix)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(list(argv))
    text = asyncio.run(_run(args.redis, args.entries, args.samples))
    print(text)
    if not args.no_write:
        put_section(ROOT / "bench" / "RESULTS.md", "console", text)
    return 0
