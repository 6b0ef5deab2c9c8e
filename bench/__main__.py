"""``python -m bench``: run the benchmark matrix and write ``bench/RESULTS.md`` + raw JSON.

``python -m bench growth|soak|profile|console|rivals ...`` run the other modes (``--help`` on
each): cost growth with the number of cached entries, a long steady load with the proxy's RSS
sampled, py-spy profiles of the text-hit and miss paths, the console's image list with 10,000
entries, and LiteLLM's and Portkey's proxies side by side. Each writes its own section of
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson

from bench.context import Options
from bench.load import pick_generator
from bench.machine import ROOT, loadavg, machine_info
from bench.matrix import SCENARIOS, plan
from bench.redis_server import private_redis
from bench.report import render
from bench.runner import Runner, RunSetup, connect_redis, log, new_run_id
from bench.sections import carried_over
from bench.targets import verdicts

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def build_parser() -> argparse.ArgumentParser:
    """The CLI."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one worker only, shorter runs (~1-2 min)")
    parser.add_argument("--duration", type=float, help="seconds per load run (default 6, quick 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections of the load generator")
    parser.add_argument(
        "--scenario", action="append", default=[], choices=SCENARIOS, help="repeatable filter"
    )
    parser.add_argument("--loadgen", choices=("auto", "wrk", "aiohttp"), default="auto")
    parser.add_argument(
        "--miss-samples", type=int, help="sequential misses per side (default 200, quick 100)"
    )
    parser.add_argument("--image-bytes", type=int, default=1_500_000, help="approximate PNG size")
    parser.add_argument(
        "--pairs", type=int, default=5, help="reference/proxy runs alternated for each target (best of N)"
    )
    parser.add_argument("--pair-duration", type=float, help="seconds of each alternated run (default 3)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="raw JSON and child logs")
    return parser


async def _main(args: argparse.Namespace) -> int:
    """Pick the Redis (``PROXY_BENCH_REDIS_URL``, else a private one, else the default), then run."""
    given = os.environ.get("PROXY_BENCH_REDIS_URL")
    if given:
        return await _bench(args, given, "given by PROXY_BENCH_REDIS_URL")
    async with private_redis() as url:
        if url is None:
            return await _bench(args, DEFAULT_REDIS, "no redis-server binary: the machine's Redis")
        return await _bench(args, url, "private redis-server started by the bench, see bench/redis_server.py")


async def _bench(args: argparse.Namespace, redis_url: str, redis_origin: str) -> int:
    started = time.monotonic()
    load_before = loadavg()
    generator = pick_generator(args.loadgen)
    opts = Options(
        duration=args.duration or (3.0 if args.quick else 6.0),
        concurrency=args.concurrency,
        generator=generator,
        run_id=new_run_id(),
        miss_samples=args.miss_samples or (100 if args.quick else 200),
        image_bytes=args.image_bytes,
        pairs=max(1, args.pairs),
        pair_duration=args.pair_duration or min(3.0, args.duration or 3.0),
    )
    cells = plan(args.quick, args.scenario)
    redis_client, redis_version = await connect_redis(redis_url)
    if redis_client is None:
        log(f"bench: Redis not reachable at {redis_url}: Redis cells are skipped (set PROXY_BENCH_REDIS_URL)")
    log(
        f"bench: run {opts.run_id}, {generator}, {opts.duration:g} s per load run, "
        f"concurrency {opts.concurrency}"
    )
    runner = Runner(opts, RunSetup(redis_url, args.out, args.image_bytes), redis_client)
    try:
        results = await runner.run(cells)
    finally:
        if redis_client is not None:
            await redis_client.aclose()
    elapsed = time.monotonic() - started
    now = datetime.now(UTC)
    settings = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "mode": ("quick" if args.quick else "full")
        + (f", scenarios {', '.join(args.scenario)}" if args.scenario else ""),
        "load generator": f"{generator} (closed loop, {opts.concurrency} connections, "
        f"{'threads = proxy workers' if generator == 'wrk' else 'one process'})",
        "duration per load run": f"{opts.duration:g} s",
        "reference/proxy runs per target": f"{opts.pairs} each of {opts.pair_duration:g} s, alternated, "
        "best reported",
        "miss-latency samples": f"{opts.miss_samples} per side",
        "image size": f"~{args.image_bytes:,} B PNG",
        "load average (1/5/15 min) before / after": f"{load_before} / {loadavg()}",
        "Redis": _safe_url(redis_url)
        + f" ({redis_origin})"
        + ("" if redis_client is not None else " (unreachable)"),
    }
    info = machine_info(redis_version, generator)
    kept = carried_over(args.results)  # the growth, soak and profile sections stay
    report = render(results, info, settings, elapsed)
    args.results.write_text(report + ("\n" + kept if kept else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    raw = {"settings": settings, "machine": info, "elapsed_s": elapsed, **results.to_json()}
    raw["targets"] = [_verdict(v) for v in verdicts(results)]
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    for path in (args.out / f"results-{stamp}.json", args.out / "latest.json"):
        path.write_bytes(orjson.dumps(raw, option=orjson.OPT_INDENT_2))
    log(f"bench: wrote {args.results} and {args.out}/latest.json in {elapsed:.0f} s")
    problems = results.problems()
    if problems:
        log(f"bench: {len(problems)} check(s) failed, see {args.results}")
    return 1 if problems else 0


def _safe_url(url: str) -> str:
    """The Redis URL without its password (RESULTS.md gets committed)."""
    parsed = urlsplit(url)
    if parsed.password is None:
        return url
    host = parsed.hostname or ""
    netloc = f"{parsed.username or ''}:***@{host}" + (f":{parsed.port}" if parsed.port else "")
    return urlunsplit(parsed._replace(netloc=netloc))


def _verdict(v: object) -> dict[str, object]:
    names = ("target", "cell", "reference", "measured", "ratio", "goal", "met", "value", "cpu_ratio")
    return {name: getattr(v, name) for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the matrix, or the mode named first."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["growth"]:
        from bench.growth import main as growth_main  # noqa: PLC0415 - one mode per run

        return growth_main(args[1:])
    if args[:1] == ["soak"]:
        from bench.soak import main as soak_main  # noqa: PLC0415

        return soak_main(args[1:])
    if args[:1] == ["console"]:
        from bench.console import main as console_main  # noqa: PLC0415

        return console_main(args[1:])
    if args[:1] == ["rivals"]:
        from bench.rivals import main as rivals_main  # noqa: PLC0415

        return rivals_main(args[1:])
    if args[:1] == ["profile"]:
        from bench.profile import main as profile_main  # noqa: PLC0415

        return profile_main(args[1:])
    return asyncio.run(_main(build_parser().parse_args(args)))


if __name__ == "__main__":
    sys.exit(main())
