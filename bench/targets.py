"""The issue's targets, each judged on one named result cell (one worker, concurrency 8)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.results import RunResults


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target on one cell: what was asked, what was measured, and whether it was met."""

    target: str
    cell: str
    goal: str
    measured: str
    met: bool | None  # None: not run

    @property
    def mark(self) -> str:
        """Met / MISSED / not run."""
        return {True: "met", False: "**MISSED**", None: "not run"}[self.met]


def _throughput(
    results: RunResults, name: str, scenario: str, cell: str, min_rps: float, max_p99: float | None
) -> Verdict:
    goal = f">= {min_rps:,.0f} req/s" + (f", p99 < {max_p99:g} ms" if max_p99 is not None else "")
    row = next((r for r in results.throughput if r.scenario == scenario and r.target == cell), None)
    if row is None:
        return Verdict(name, cell, goal, "-", None)
    measured = f"{row.load.rps:,.0f} req/s, p99 {row.load.p99_ms:.2f} ms"
    met = row.load.rps >= min_rps and (max_p99 is None or row.load.p99_ms < max_p99) and not row.problems
    return Verdict(name, cell, goal, measured + (" (checks failed)" if row.problems else ""), met)


def verdicts(results: RunResults) -> list[Verdict]:
    """Every target the issue lists, on the cells it is about."""
    out = [
        _throughput(results, "image hit, in-process hot tier", "image_hit", "w1/redis", 1000, 20),
        _throughput(results, "image hit, in-process (memory store)", "image_hit", "w1/memory", 1000, 20),
        _throughput(
            results,
            "image hit read from Redis (hot tier off)",
            "image_hit_redis",
            "w1/redis/hot-off",
            350,
            50,
        ),
        _throughput(results, "text hit", "text_hit", "w1/redis", 3000, None),
        _throughput(results, "text hit", "text_hit", "w1/memory", 3000, None),
    ]
    for cell in ("w1/redis", "w1/memory"):
        miss = next((r for r in results.miss_latency if r.target == cell), None)
        if miss is None:
            out.append(Verdict("added latency on a miss (p50)", cell, "< 1 ms", "-", None))
        else:
            measured = f"{miss.added_p50_ms:+.3f} ms (paired median {miss.paired_median_added_ms:+.3f} ms)"
            out.append(
                Verdict("added latency on a miss (p50)", cell, "< 1 ms", measured, miss.added_p50_ms < 1.0)
            )
    memory = next(iter(results.redis_memory), None)
    if memory is None:
        out.append(Verdict("Redis bytes per cached image", "w1/redis", "<= 1.05 x PNG", "-", None))
    else:
        measured = f"{memory.ratio:.4f} x ({memory.total_bytes:,} B for a {memory.png_bytes:,} B PNG)"
        met = memory.ratio <= 1.05 and not memory.problems
        out.append(Verdict("Redis bytes per cached image", memory.target, "<= 1.05 x PNG", measured, met))
    for cell in ("w1/redis", "w1/memory", "w2/redis"):
        flight = next((r for r in results.coalesce if r.target == cell), None)
        name = "32 identical concurrent misses"
        if flight is None:
            out.append(Verdict(name, cell, "1 upstream call", "-", None))
        else:
            measured = f"{flight.upstream_calls} upstream call(s)"
            met = flight.upstream_calls == 1 and not flight.problems
            out.append(Verdict(name, cell, "1 upstream call", measured, met))
    return out
