"""Results of ``python -m bench soak`` and their section of ``bench/RESULTS.md``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.procs import mib

_MIB = 2**20


@dataclass(frozen=True, slots=True)
class KindSummary:
    """One kind of request over the whole soak."""

    requests: int
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    x_cache: dict[str, int]
    errors: int
    problems: tuple[str, ...]


def slope_mib_per_min(samples: Sequence[tuple[float, int]]) -> float:
    """Least-squares RSS trend over the second half of the samples (0 with fewer than 4)."""
    tail = samples[len(samples) // 2 :]
    if len(tail) < 2 or len(samples) < 4:
        return 0.0
    mean_t = sum(t for t, _ in tail) / len(tail)
    mean_r = sum(r for _, r in tail) / len(tail)
    var = sum((t - mean_t) ** 2 for t, _ in tail)
    cov = sum((t - mean_t) * (r - mean_r) for t, r in tail)
    return cov / var * 60 / _MIB if var else 0.0


def render(
    measured: Mapping[str, object],
    samples: Sequence[tuple[float, int]],
    kinds: Mapping[str, KindSummary],
    problems: Sequence[str],
) -> str:
    """The ``soak`` section."""
    idle = int(str(measured["idle rss"]))
    hot = int(str(measured["hot tier bound"]))
    memo = int(str(measured.get("request memo bound", 0)))
    bound = hot + memo  # the in-process caches with a byte bound: their sum caps the growth
    values = [rss for _, rss in samples] or [0]
    peak = max(values)
    within = peak - idle <= bound
    verdict = "within" if within else "**beyond**"
    out = [
        "## Soak (`python -m bench soak`)",
        "",
        f"Measured {measured['date']}: {measured['minutes']} min of paced load at {measured['rate']} req/s "
        f"(open loop) against one proxy worker (Redis, hot tier on), plus a distinct image miss every "
        f"{measured['image miss every s']} s so the hot tier keeps filling and evicting. Mix: 60% text "
        "hits over 100 entries, 25% image hits over 16 entries (distinct ~1.5 MB PNGs), 15% text "
        "misses (new prompts, stored). Load average before / after "
        f"{measured['load average before / after']}: the machine is shared with other work.",
        "",
        f"Proxy allocator: {measured.get('allocator', 'glibc default')} (`--allocator`; deploy/Dockerfile "
        "sets `MALLOC_MMAP_THRESHOLD_=131072`).",
        "",
        f"RSS sampled every {measured['sample every s']} s (`VmRSS`): idle proxy {mib(idle)}, after "
        f"priming {mib(int(str(measured['primed rss'])))}; during the soak min {mib(min(values))}, "
        f"max {mib(peak)}, last {mib(values[-1])}; trend over the second half "
        f"{slope_mib_per_min(samples):+.2f} MiB/min. Growth above idle: {mib(peak - idle)}, "
        f"{verdict} the in-process bounds ({mib(bound)}: hot tier {mib(hot)} + request memo {mib(memo)}). "
        "Redis `used_memory` after: "
        f"{mib(int(str(measured['redis used_memory after'])))}.",
        "",
        "| minute | RSS |",
        "|---:|---:|",
    ]
    last_minute = -1
    for seconds, rss in samples:
        minute = int(seconds // 60)
        if minute != last_minute:
            out.append(f"| {seconds / 60:.1f} | {mib(rss)} |")
            last_minute = minute
    out += [
        "",
        "| requests | count | p50 ms | p99 ms | X-Cache | checks |",
        "|---|---:|---:|---:|---|---|",
    ]
    for kind, k in kinds.items():
        x_cache = ", ".join(f"{name} {count}" for name, count in sorted(k.x_cache.items()))
        checks = "ok" if not k.problems else "FAIL: " + "; ".join(k.problems)
        out.append(f"| {kind} | {k.requests:,} | {k.p50_ms:.2f} | {k.p99_ms:.2f} | {x_cache} | {checks} |")
    if problems:
        out += ["", "Problems: " + "; ".join(problems)]
    return "\n".join([*out, ""])
