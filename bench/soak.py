"""``python -m bench soak --minutes 10``: steady mixed load for N minutes, the proxy's RSS sampled.

One proxy worker (Redis, hot tier on: the defaults) gets an open-loop, paced load: text hits over
100 entries, image hits over 16 entries (distinct PNGs), text misses (new prompts, stored) and a
distinct image miss every ``--image-miss-every`` seconds, so the hot tier fills and keeps
evicting. RSS (``VmRSS``) is sampled every ``--sample-every`` seconds; the report says whether it
grew beyond the hot tier's bound (``PROXY_HOT_CACHE_BYTES``) above the idle proxy's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import aiohttp
import orjson

from bench.fill import distinct_image_family, fill, text_family
from bench.growth import MALLOC_ALLOCATORS, SHIPPED_ALLOCATOR
from bench.loadgen import percentile
from bench.machine import loadavg
from bench.matrix import ProxyConfig
from bench.payloads import HEADERS
from bench.procs import rss_bytes
from bench.runner import log
from bench.sections import put_section
from bench.soak_report import KindSummary, render
from bench.stack import Timer, common_flags, stack, stamp
from proxy.config import Settings
from proxy.pipeline.memo import MEMO_BYTES

TEXT_KEYS = 100
IMAGE_KEYS = 16
# Share of the paced requests per kind (image misses come on their own clock).
MIX = {"text hit": 0.60, "image hit": 0.25, "text miss": 0.15}
EXPECTED = {"text hit": "HIT", "image hit": "HIT", "text miss": "MISS", "image miss": "MISS"}


@dataclass(slots=True)
class KindStats:
    """What one kind of request saw over the soak."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    x_cache: Counter[str] = field(default_factory=Counter)
    errors: int = 0


@dataclass(slots=True)
class Soak:
    """The running soak: request bodies, counters and the RSS series."""

    tag: str
    url: str
    stats: dict[str, KindStats]
    samples: list[tuple[float, int]] = field(default_factory=list)
    text_misses: int = 0
    image_misses: int = 0
    pick: random.Random = field(default_factory=lambda: random.Random(1))

    def body(self, kind: str) -> bytes:
        """The next request of ``kind``."""
        if kind == "text hit":
            return text_family(self.tag + " hit").body(self.pick.randint(1, TEXT_KEYS))
        if kind == "image hit":
            return distinct_image_family(self.tag).body(self.pick.randint(1, IMAGE_KEYS))
        if kind == "text miss":
            self.text_misses += 1
            return text_family(self.tag + " miss").body(self.text_misses)
        self.image_misses += 1
        return distinct_image_family(self.tag).body(IMAGE_KEYS + self.image_misses)

    async def send(self, session: aiohttp.ClientSession, kind: str, body: bytes) -> None:
        """One request, recorded under its kind."""
        stats = self.stats[kind]
        started = time.perf_counter()
        try:
            async with session.post(self.url, data=body, headers=HEADERS) as response:
                await response.read()
                stats.statuses[response.status] += 1
                stats.x_cache[response.headers.get("X-Cache", "-")] += 1
        except (aiohttp.ClientError, TimeoutError):
            stats.errors += 1
            return
        stats.latencies_ms.append((time.perf_counter() - started) * 1000)


async def _paced(soak: Soak, session: aiohttp.ClientSession, rate: float, until: float) -> None:
    """Requests at ``rate`` per second on a fixed schedule (open loop: a slow answer does not
    slow the schedule), kinds drawn by ``MIX``; at most 64 in flight."""
    kinds, weights = list(MIX), list(MIX.values())
    slots = asyncio.Semaphore(64)
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    sent = 0
    while time.monotonic() < until:
        sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        kind = soak.pick.choices(kinds, weights)[0]
        await slots.acquire()
        task = asyncio.create_task(soak.send(session, kind, soak.body(kind)))
        task.add_done_callback(lambda _: slots.release())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


async def _image_misses(soak: Soak, session: aiohttp.ClientSession, every: float, until: float) -> None:
    while time.monotonic() + every < until:
        await asyncio.sleep(every)
        await soak.send(session, "image miss", soak.body("image miss"))


async def _sample(soak: Soak, pid: int, every: float, until: float, timer: Timer) -> None:
    while True:
        soak.samples.append((timer.seconds, rss_bytes(pid)))
        if len(soak.samples) % max(1, round(60 / every)) == 0:
            log(f"[soak] {timer.seconds / 60:4.1f} min: RSS {soak.samples[-1][1] / 2**20:,.0f} MiB")
        if time.monotonic() + every > until:
            return
        await asyncio.sleep(every)


def summarise(soak: Soak) -> dict[str, KindSummary]:
    """Per kind: requests, p50/p99 ms, statuses, X-Cache, errors, and what was unexpected."""
    out: dict[str, KindSummary] = {}
    for kind, stats in soak.stats.items():
        ordered = sorted(stats.latencies_ms)
        # BYPASS: a Redis call outlived the store timeout and upstream answered (by design).
        wrong = {k: v for k, v in stats.x_cache.items() if k not in {EXPECTED[kind], "BYPASS"}}
        problems = []
        if stats.errors or set(stats.statuses) - {200}:
            problems.append(f"statuses {dict(stats.statuses)}, {stats.errors} errors")
        if wrong:
            problems.append(f"X-Cache {wrong} (expected {EXPECTED[kind]})")
        out[kind] = KindSummary(
            requests=len(ordered),
            p50_ms=percentile(ordered, 50),
            p99_ms=percentile(ordered, 99),
            statuses=dict(stats.statuses),
            x_cache=dict(stats.x_cache),
            errors=stats.errors,
            problems=tuple(problems),
        )
    return out


async def _run(args: argparse.Namespace) -> int:
    timer = Timer()
    load_before = loadavg()
    async with contextlib.AsyncExitStack() as resources:
        bench = await resources.enter_async_context(stack(args.out, args.image_bytes, args.loadgen))
        env = MALLOC_ALLOCATORS[args.allocator]
        proxy = await resources.enter_async_context(bench.proxy(ProxyConfig(1, "redis"), "soak", env))
        idle_rss = rss_bytes(proxy.pid)
        soak = Soak(bench.opts.run_id, proxy.target.chat_url, {kind: KindStats() for kind in EXPECTED})
        primed = [
            await fill(soak.url, text_family(soak.tag + " hit").bodies(1, TEXT_KEYS), 16),
            await fill(soak.url, distinct_image_family(soak.tag).bodies(1, IMAGE_KEYS), 8),
        ]
        problems = [p for f in primed for p in f.problems]
        primed_rss = rss_bytes(proxy.pid)
        log(f"[soak] idle RSS {idle_rss / 2**20:,.0f} MiB, primed {primed_rss / 2**20:,.0f} MiB; load starts")
        soak_timer = Timer()
        until = time.monotonic() + args.minutes * 60
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as s:
            await asyncio.gather(
                _paced(soak, s, args.rate, until),
                _image_misses(soak, s, args.image_miss_every, until),
                _sample(soak, proxy.pid, args.sample_every, until, soak_timer),
            )
        used_memory = (await bench.memory()).used
    kinds = summarise(soak)
    problems += [p for k in kinds.values() for p in k.problems]
    measured = {
        "date": stamp(),
        "minutes": args.minutes,
        "rate": args.rate,
        "image miss every s": args.image_miss_every,
        "sample every s": args.sample_every,
        "load average before / after": f"{load_before} / {loadavg()}",
        "hot tier bound": Settings().hot_cache_bytes,
        "request memo bound": MEMO_BYTES,
        "allocator": args.allocator,
        "idle rss": idle_rss,
        "primed rss": primed_rss,
        "redis used_memory after": used_memory,
        "elapsed_s": timer.seconds,
    }
    raw = {
        "settings": measured,
        "samples": soak.samples,
        "kinds": {kind: asdict(summary) for kind, summary in kinds.items()},
        "problems": problems,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak-latest.json").write_bytes(
        orjson.dumps(raw, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    put_section(args.results, "soak", render(measured, soak.samples, kinds, problems))
    log(f"bench soak: wrote a section of {args.results} in {timer.seconds:.0f} s")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench soak``."""
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    common_flags(parser)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="paced requests per second")
    parser.add_argument("--image-miss-every", type=float, default=2.0, help="seconds between image misses")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument(
        "--allocator",
        choices=sorted(MALLOC_ALLOCATORS),
        default=SHIPPED_ALLOCATOR,
        help="the proxy's glibc malloc setting (default: what deploy/Dockerfile sets)",
    )
    return asyncio.run(_run(parser.parse_args(argv)))
