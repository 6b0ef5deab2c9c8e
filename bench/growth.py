"""``python -m bench growth``: what the proxy costs as its cache grows (the matrix stays short).

Against a private ``redis-server`` and the simulated upstream, in this order:

1. 1k / 10k / 100k cached entries, all written through the proxy (misses it stores): hit
   latency over random keys and Redis ``used_memory`` at each size; then the purge of the one
   namespace holding them all (``POST /admin/cache/purge``), timed;
2. proxy RSS with the in-process hot tier (default 256 MiB) empty, then filled with distinct
   image entries (each its own PNG), then after a purge;
3. two workers vs one (text and image hits on one key): req/s and req/s per busy core.

The mix is stated in the report: 90% text entries (one distinct prompt each, the bulk of a real
cache), 10% image entries that share one PNG blob (see ``bench.fill.image_family``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

import orjson

from bench.context import Target
from bench.fill import Family, distinct_image_family, fill, image_family, text_family
from bench.growth_report import HotTierResult, LevelResult, PurgeResult, WorkerResult, render
from bench.load import LoadResult, LoadSpec, run_load
from bench.machine import loadavg
from bench.matrix import ProxyConfig
from bench.measure import load_problems, measure
from bench.payloads import BEARER, HEADERS
from bench.probes import prefixed_keys
from bench.procs import rss_bytes
from bench.runner import log
from bench.sections import put_section
from bench.stack import Running, Stack, Timer, common_flags, machine_busy, stack
from bench.throughput import cache_results, request_body, warm_hits
from proxy.cache.keys import bearer_namespace
from proxy.config import Settings

LEVELS = (1_000, 10_000, 100_000)
IMAGE_SHARE = 0.1
HOT_FILL_IMAGES = (40, 80, 160)  # distinct image entries written, cumulative
# The proxy's allocator settings compared: glibc's defaults, and a fixed mmap threshold (setting
# it turns the dynamic adjustment off, mallopt(3)), so every buffer above 128 KiB is mmapped and
# goes back to the system when freed.
MALLOC_ALLOCATORS: dict[str, dict[str, str]] = {
    "glibc default": {},
    "MALLOC_MMAP_THRESHOLD_=131072": {"MALLOC_MMAP_THRESHOLD_": "131072"},
}
SHIPPED_ALLOCATOR = "MALLOC_MMAP_THRESHOLD_=131072"  # what deploy/Dockerfile sets
_SETTLE_S = 0.5  # background stores finish after the reply


async def _workers(bench: Stack) -> list[WorkerResult]:
    rows: list[WorkerResult] = []
    for workers in (1, 2):
        async with bench.proxy(ProxyConfig(workers, "redis"), "growth-workers") as proxy:
            for scenario in ("text_hit", "image_hit"):
                body = request_body(scenario, f"growth workers {bench.opts.run_id} w{workers}", bench.opts)
                _, problems = await warm_hits(proxy.target, body, body, stream=False)
                busy_before = machine_busy()
                timer = Timer()
                run = await measure(proxy.target, body, bench.opts)
                wall = timer.seconds
                busy = machine_busy() - busy_before
                problems += load_problems([run])
                rows.append(WorkerResult(scenario, workers, run.load, wall, run.cpu_s, busy, tuple(problems)))
                log(f"[growth] w{workers} {scenario}: {run.load.rps:,.0f} req/s, proxy cpu {run.cpu_s:.1f} s")
    return rows


async def _purge(bench: Stack, proxy: Running, admin: str, namespace: str) -> tuple[float, int, str]:
    """Seconds, deleted count and problem ('' when none) of one namespace purge."""
    started = time.monotonic()
    async with bench.session.post(
        proxy.target.base + "/admin/cache/purge",
        data=orjson.dumps({"namespace": namespace}),
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
    ) as response:
        payload = await response.read()
        seconds = time.monotonic() - started
        if response.status != 200:
            return seconds, 0, f"purge answered {response.status}: {payload[:300]!r}"
    return seconds, int(orjson.loads(payload)["deleted"]), ""


async def _hot_tier(bench: Stack, steps: Sequence[int], allocator: str) -> list[HotTierResult]:
    """RSS of a fresh proxy as distinct image entries fill its hot tier, then after a purge.

    ``allocator`` names a ``MALLOC_ALLOCATORS`` setting for the proxy: its large buffers (2 MB
    bodies, 1.5 MB PNGs) come and go on every image miss, and by default glibc raises its mmap
    threshold to the size of a freed mmapped block (mallopt(3), M_MMAP_THRESHOLD), after which
    such buffers live in the heap, whose freed space the process keeps.
    """
    admin = secrets.token_hex(24)
    env = {"PROXY_ADMIN_TOKEN": admin, **MALLOC_ALLOCATORS[allocator]}
    rows: list[HotTierResult] = []
    async with bench.proxy(ProxyConfig(1, "redis"), f"growth-hot-{allocator}", env) as proxy:
        url = proxy.target.chat_url
        warm = text_family(f"{bench.opts.run_id} hot-warm {allocator}")
        warmed = await fill(url, warm.bodies(1, 50), 8)
        empty = rss_bytes(proxy.pid)
        rows.append(
            HotTierResult(allocator, "empty (50 text entries written)", empty, "; ".join(warmed.problems))
        )
        images = distinct_image_family(f"{bench.opts.run_id} {allocator}")
        written = 0
        for upto in steps:
            result = await fill(url, images.bodies(written + 1, upto), 8)
            written = upto
            await asyncio.sleep(_SETTLE_S)
            state = f"{upto} distinct image entries written"
            rows.append(HotTierResult(allocator, state, rss_bytes(proxy.pid), "; ".join(result.problems)))
            log(f"[growth] hot tier ({allocator}): {state}, RSS {rows[-1].rss / 2**20:,.0f} MiB")
        _, deleted, problem = await _purge(bench, proxy, admin, bearer_namespace(BEARER))
        await asyncio.sleep(_SETTLE_S)
        state = f"after purging all ({deleted} entries)"
        rows.append(HotTierResult(allocator, state, rss_bytes(proxy.pid), problem))
    return rows


async def _hits(
    bench: Stack, target: Target, family: Family, count: int
) -> tuple[LoadResult, list[str], int]:
    """Closed-loop hits over random entries 1..count of ``family``: all must be HITs, except that
    a lookup outliving the store timeout is served from upstream (``BYPASS``, counted apart)."""
    calls_before = await bench.control.chat_calls()
    before = await cache_results(bench.session, target)
    spec = LoadSpec(target.chat_url, family.template, HEADERS, bench.opts.duration, 8, pick=count)
    load = await run_load(spec, bench.opts.generator)
    after = await cache_results(bench.session, target)
    changed = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    bypassed = changed.pop("bypass", 0)
    problems = []
    non_hits = {k: v for k, v in changed.items() if k != "hit"}
    if non_hits:
        problems.append(f"{family.name}: non-hits {non_hits}")
    calls = await bench.control.chat_calls() - calls_before
    if calls > bypassed:
        problems.append(f"{family.name}: {calls} upstream calls during a hit run ({bypassed} bypassed)")
    if load.errors or load.non2xx or not load.requests:
        problems.append(
            f"{family.name}: {load.requests} requests, {load.errors} errors, {load.non2xx} non-2xx"
        )
    return load, problems, bypassed


async def _levels(
    bench: Stack, concurrency: int, sizes: Sequence[int]
) -> tuple[list[LevelResult], PurgeResult]:
    admin = secrets.token_hex(24)
    text, image = text_family(bench.opts.run_id), image_family(bench.opts.run_id)
    rows: list[LevelResult] = []
    async with bench.proxy(ProxyConfig(1, "redis"), "growth-levels", {"PROXY_ADMIN_TOKEN": admin}) as proxy:
        url = proxy.target.chat_url
        previous = await bench.memory()
        done_text = done_image = 0
        for level in sizes:
            images = round(level * IMAGE_SHARE)
            texts = level - images
            timer = Timer()
            filled = [
                await fill(url, text.bodies(done_text + 1, texts), concurrency),
                await fill(url, image.bodies(done_image + 1, images), concurrency),
            ]
            fill_seconds = timer.seconds
            done_text, done_image = texts, images
            await asyncio.sleep(_SETTLE_S)
            entries = len(await prefixed_keys(bench.redis, f"{proxy.prefix}:r1:"))
            used = await bench.memory()
            text_load, text_problems, text_bypassed = await _hits(bench, proxy.target, text, texts)
            image_load, image_problems, image_bypassed = await _hits(bench, proxy.target, image, images)
            problems = [p for f in filled for p in f.problems] + text_problems + image_problems
            if entries != level:
                problems.append(f"{entries} entry keys in Redis, expected {level}")
            rows.append(
                LevelResult(
                    entries=level,
                    text_entries=texts,
                    image_entries=images,
                    fill_seconds=fill_seconds,
                    entry_keys=entries,
                    used_memory=used.used,
                    dataset=used.dataset,
                    dataset_before=previous.dataset,
                    retried={k: v for f in filled for k, v in f.retried.items()},
                    bypassed_hits=text_bypassed + image_bypassed,
                    entries_before=rows[-1].entries if rows else 0,
                    redis_keys=int(await bench.redis.dbsize()),
                    text_hit=text_load,
                    image_hit=image_load,
                    proxy_rss=rss_bytes(proxy.pid),
                    problems=tuple(problems),
                )
            )
            previous = used
            log(
                f"[growth] {level:,} entries: filled in {fill_seconds:.0f} s, used_memory "
                f"{used.used / 2**20:,.1f} MiB, text hit p50 {text_load.p50_ms:.2f} ms, image hit p50 "
                f"{image_load.p50_ms:.2f} ms {problems or ''}"
            )
        seconds, deleted, problem = await _purge(bench, proxy, admin, bearer_namespace(BEARER))
        left = len(await prefixed_keys(bench.redis, f"{proxy.prefix}:r1:"))
        purge = PurgeResult(sizes[-1], deleted, seconds, left, (await bench.memory()).used, problem)
        log(f"[growth] purge of {deleted:,} entries: {seconds:.2f} s, {left} entry keys left {problem}")
    return rows, purge


async def _run(args: argparse.Namespace) -> int:
    timer = Timer()
    load_before = loadavg()
    async with contextlib.AsyncExitStack() as resources:
        bench = await resources.enter_async_context(
            stack(args.out, args.image_bytes, args.loadgen, duration=args.duration)
        )
        # The cache sizes first, while the private Redis holds nothing else.
        levels, purge = await _levels(bench, args.concurrency, args.levels)
        hot = [row for name in MALLOC_ALLOCATORS for row in await _hot_tier(bench, args.hot_images, name)]
        workers = await _workers(bench)
        redis_version = bench.redis_version
    hot_bound = Settings().hot_cache_bytes
    measured = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": timer.seconds,
        "load average before / after": f"{load_before} / {loadavg()}",
        "redis-server": redis_version,
        "generator": bench.opts.generator,
        "duration per load run": bench.opts.duration,
        "hot tier bound": hot_bound,
    }
    raw = {
        "settings": measured,
        "workers": [asdict(w) for w in workers],
        "hot_tier": [asdict(h) for h in hot],
        "levels": [asdict(level) for level in levels],
        "purge": asdict(purge),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "growth-latest.json").write_bytes(orjson.dumps(raw, option=orjson.OPT_INDENT_2))
    put_section(args.results, "growth", render(measured, workers, hot, levels, purge, IMAGE_SHARE))
    log(f"bench growth: wrote a section of {args.results} in {timer.seconds:.0f} s")
    problems = [p for level in levels for p in level.problems] + [h.problem for h in hot if h.problem]
    problems += [p for w in workers for p in w.problems] + ([purge.problem] if purge.problem else [])
    return 1 if problems else 0


def _sizes(raw: str) -> tuple[int, ...]:
    sizes = tuple(int(part) for part in raw.split(","))
    if not sizes or any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
        raise argparse.ArgumentTypeError("increasing positive sizes, comma separated")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench growth``."""
    parser = argparse.ArgumentParser(prog="python -m bench growth", description=__doc__)
    common_flags(parser)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent writes while filling")
    parser.add_argument("--levels", type=_sizes, default=LEVELS, help="cache sizes, e.g. 1000,10000,100000")
    parser.add_argument(
        "--hot-images", type=_sizes, default=HOT_FILL_IMAGES, help="distinct images written, cumulative"
    )
    return asyncio.run(_run(parser.parse_args(argv)))
