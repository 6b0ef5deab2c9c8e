"""The performance targets (DESIGN.md), each a ratio within one run: proxy row / reference row.

Throughput targets compare the proxy (one worker, Redis, hot tier as named) with the bare
reference it was interleaved with (``bench.bare``); the miss target is the proxy's p50 minus the
same requests' p50 straight to the upstream; memory and single flight compare with the PNG size
and with the number of requests.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.context import CHAT_PATH
from bench.matrix import REFERENCES, TARGET_CELL
from bench.payloads import IMAGES_PATH
from bench.results import RunResults, ThroughputResult

MISS_ADDED_MS = 0.5
REDIS_BYTES_PER_PNG = 1.05
# (target, proxy scenario, minimum proxy/reference req/s)
THROUGHPUT_TARGETS = (
    ("image hit, hot tier", "image_hit", 0.9),
    ("image hit from Redis every request", "image_hit_redis", 0.45),
    ("text hit", "text_hit", 0.6),
    ("vision-edit hit (~2 MB request)", "vision_hit", 0.6),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target: the reference row, the proxy row, their ratio, the goal, and whether it was met."""

    target: str
    cell: str
    reference: str
    measured: str
    ratio: str
    goal: str
    met: bool | None  # None: not run
    value: float | None = None  # the ratio (or added ms) as a number, for the raw JSON
    cpu_ratio: float | None = None  # reference CPU ms/request / proxy CPU ms/request

    @property
    def mark(self) -> str:
        """Met / MISSED / not run."""
        return {True: "met", False: "**MISSED**", None: "not run"}[self.met]


def _rps(row: ThroughputResult) -> str:
    runs = "/".join(f"{r.rps:,.0f}" for r in row.runs)
    return f"{row.load.rps:,.0f} req/s" + (f" (best of {runs})" if len(row.runs) > 1 else "")


def _throughput(results: RunResults, name: str, scenario: str, minimum: float) -> Verdict:
    reference = REFERENCES[scenario]
    goal = f">= {minimum:g}x"
    proxy = results.row(scenario, reference.cell)
    bare = results.row(scenario, reference.kind)
    if proxy is None or bare is None or bare.load.rps <= 0:
        return Verdict(name, reference.cell, reference.kind, f"{reference.cell}: -", "-", goal, None)
    ratio = proxy.load.rps / bare.load.rps
    checks_ok = not proxy.problems and not bare.problems
    cpu = bare.cpu_ms_per_request / proxy.cpu_ms_per_request if proxy.cpu_ms_per_request > 0 else None
    return Verdict(
        name,
        reference.cell,
        f"{reference.kind} {scenario}: {_rps(bare)}",
        f"{reference.cell}: {_rps(proxy)}" + ("" if checks_ok else " (checks failed)"),
        f"{ratio:.2f}x",
        goal,
        ratio >= minimum and checks_ok,
        ratio,
        cpu,
    )


def _miss(results: RunResults) -> Verdict:
    name, goal = "added miss latency, p50", f"<= +{MISS_ADDED_MS:g} ms"
    miss = next((r for r in results.miss_latency if r.target == TARGET_CELL), None)
    if miss is None:
        return Verdict(name, TARGET_CELL, "direct (upstream)", f"{TARGET_CELL}: -", "-", goal, None)
    return Verdict(
        name,
        TARGET_CELL,
        f"direct (upstream) p50 {miss.direct_p50_ms:.3f} ms"
        + (
            ""
            if miss.forward_added_p50_ms is None
            else f"; bare-forward adds {miss.forward_added_p50_ms:+.3f} ms"
        ),
        f"{TARGET_CELL} p50 {miss.proxy_p50_ms:.3f} ms (paired median {miss.paired_median_added_ms:+.3f} ms)",
        f"{miss.added_p50_ms:+.3f} ms",
        goal,
        miss.added_p50_ms <= MISS_ADDED_MS and not miss.problems,
        miss.added_p50_ms,
    )


def _memory(results: RunResults, name: str, route: str) -> Verdict:
    goal = f"<= {REDIS_BYTES_PER_PNG:g}x"
    memory = next((r for r in results.redis_memory if r.route == route), None)
    if memory is None:
        return Verdict(name, TARGET_CELL, "PNG bytes", f"{TARGET_CELL}: -", "-", goal, None)
    return Verdict(
        name,
        memory.target,
        f"PNG {memory.png_bytes:,} B",
        f"{memory.target}: {memory.total_bytes:,} B in Redis",
        f"{memory.ratio:.4f}x",
        goal,
        memory.ratio <= REDIS_BYTES_PER_PNG and not memory.problems,
        memory.ratio,
    )


def _single_flight(results: RunResults, cell: str) -> Verdict:
    name = "32 identical concurrent misses"
    flight = next((r for r in results.coalesce if r.target == cell), None)
    if flight is None:
        return Verdict(name, cell, "32 requests", f"{cell}: -", "-", "1 upstream call", None)
    return Verdict(
        name,
        cell,
        f"{flight.requests} requests",
        f"{cell}: {flight.upstream_calls} upstream call(s)",
        f"{flight.upstream_calls}/{flight.requests}",
        "1 upstream call",
        flight.upstream_calls == 1 and not flight.problems,
        float(flight.upstream_calls),
    )


def verdicts(results: RunResults) -> list[Verdict]:
    """Every target DESIGN.md lists, on the cells it is about."""
    out = [_throughput(results, name, scenario, minimum) for name, scenario, minimum in THROUGHPUT_TARGETS]
    out += [
        _miss(results),
        _memory(results, "Redis bytes per cached image", CHAT_PATH),
        _memory(results, "Redis bytes per cached image (Images API)", IMAGES_PATH),
    ]
    out += [_single_flight(results, cell) for cell in (TARGET_CELL, "w1/memory", "w2/redis")]
    return out
