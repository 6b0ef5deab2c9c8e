"""The fallback load generator (no wrk installed): a bounded aiohttp client in its own process.

``python -m bench.loadgen < SPEC_JSON`` runs ``concurrency`` closed-loop clients for ``duration``
seconds and prints one JSON line with the same fields ``bench.wrk`` reports.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


async def _client(
    session: aiohttp.ClientSession, spec: dict[str, Any], worker: int, deadline: float, out: dict[str, Any]
) -> None:
    varies = spec["unique"] or spec["pick"]
    prefix, _, suffix = spec["body"].partition(spec["mark"]) if varies else (spec["body"], "", "")
    picker = random.Random(worker)
    count = 0
    while time.perf_counter() < deadline:
        count += 1
        if spec["pick"]:
            body = f"{prefix}{picker.randint(1, spec['pick'])}{suffix}"
        else:
            body = f"{prefix}{worker}-{count}{suffix}" if spec["unique"] else prefix
        started = time.perf_counter()
        try:
            async with session.post(spec["url"], data=body.encode(), headers=spec["headers"]) as response:
                data = await response.read()
                if response.status >= 400:
                    out["non2xx"] += 1
        except (aiohttp.ClientError, TimeoutError):
            out["errors"] += 1
            continue
        out["latencies"].append((time.perf_counter() - started) * 1e6)
        out["bytes"] += len(data)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Drive the load and summarise it."""
    out: dict[str, Any] = {"latencies": [], "bytes": 0, "errors": 0, "non2xx": 0}
    connector = aiohttp.TCPConnector(limit=spec["concurrency"])
    timeout = aiohttp.ClientTimeout(total=spec["timeout"])
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + spec["duration"]
        await asyncio.gather(*(_client(session, spec, i, deadline, out) for i in range(spec["concurrency"])))
        elapsed = time.perf_counter() - started
    latencies = sorted(out["latencies"])
    return {
        "generator": "aiohttp",
        "requests": len(latencies),
        "duration_s": elapsed,
        "bytes": out["bytes"],
        "errors": out["errors"],
        "non2xx": out["non2xx"],
        "p50_us": percentile(latencies, 50),
        "p90_us": percentile(latencies, 90),
        "p99_us": percentile(latencies, 99),
        "mean_us": sum(latencies) / len(latencies) if latencies else 0.0,
        "max_us": latencies[-1] if latencies else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the spec is one JSON document on stdin (or the first argument)."""
    args = list(sys.argv[1:] if argv is None else argv)
    spec = orjson.loads(args[0] if args else sys.stdin.buffer.read())
    try:
        import uvloop  # noqa: PLC0415 - optional accelerator

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass
    result = asyncio.run(run(spec))
    print("BENCHJSON " + orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
