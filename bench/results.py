"""Result values of the scenarios; plain frozen dataclasses so they dump straight to JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.load import LoadResult

REFERENCE_KINDS = ("bare-bytes", "bare-read", "raw-redis-get")


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    """Closed-loop load against the proxy (``target`` = config label), the upstream (``direct``) or
    a bare reference (``target`` = its kind, ``pair`` = the proxy cell it was interleaved with).

    ``load`` is the best of ``runs`` by req/s; a proxy row's ``pair`` names its reference.
    """

    scenario: str
    target: str
    workers: int
    store: str
    hot_cache: bool
    concurrency: int
    load: LoadResult
    cpu_ms_per_request: float
    upstream_calls: int
    cache_results: dict[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    runs: tuple[LoadResult, ...] = ()
    cpu_ms_runs: tuple[float, ...] = ()  # CPU ms/request of each run, in ``runs`` order
    pair: str = ""

    @property
    def is_reference(self) -> bool:
        """A bare reference's row (``bench.bare``)."""
        return self.target in REFERENCE_KINDS

    def to_json(self) -> dict[str, Any]:
        """asdict plus the derived req/s."""
        data = asdict(self)
        data["load"]["rps"] = self.load.rps
        for run, raw in zip(self.runs, data["runs"], strict=True):
            raw["rps"] = run.rps
        return data


@dataclass(frozen=True, slots=True)
class MissLatencyResult:
    """Unloaded sequential misses through the proxy vs. the same calls straight to the upstream."""

    target: str
    samples: int
    proxy_p50_ms: float
    proxy_p99_ms: float
    direct_p50_ms: float
    direct_p99_ms: float
    paired_median_added_ms: float
    problems: tuple[str, ...] = ()
    # bare-forward (bench.bare): the same misses through a forwarder that does nothing else
    forward_p50_ms: float | None = None

    @property
    def added_p50_ms(self) -> float:
        """Proxy p50 minus direct p50."""
        return self.proxy_p50_ms - self.direct_p50_ms

    @property
    def forward_added_p50_ms(self) -> float | None:
        """bare-forward p50 minus direct p50: what the stack alone adds to a miss."""
        return None if self.forward_p50_ms is None else self.forward_p50_ms - self.direct_p50_ms

    @property
    def added_p99_ms(self) -> float:
        """Proxy p99 minus direct p99."""
        return self.proxy_p99_ms - self.direct_p99_ms

    def to_json(self) -> dict[str, Any]:
        """asdict plus the derived differences."""
        return {
            **asdict(self),
            "added_p50_ms": self.added_p50_ms,
            "added_p99_ms": self.added_p99_ms,
            "forward_added_p50_ms": self.forward_added_p50_ms,
        }


@dataclass(frozen=True, slots=True)
class CoalesceResult:
    """N identical concurrent misses and how many upstream calls they cost."""

    target: str
    requests: int
    upstream_calls: int
    expected_calls: int
    x_cache: dict[str, int]
    elapsed_ms: float
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """asdict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RedisMemoryResult:
    """Redis ``MEMORY USAGE`` of every key one cached image response created vs. the PNG size."""

    target: str
    keys: dict[str, int]
    png_bytes: int
    problems: tuple[str, ...] = ()
    route: str = "/v1/chat/completions"  # where the miss went (the Images API stores b64_json)

    @property
    def total_bytes(self) -> int:
        """Sum over the entry's keys."""
        return sum(self.keys.values())

    @property
    def ratio(self) -> float:
        """Redis bytes per PNG byte."""
        return self.total_bytes / self.png_bytes if self.png_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        """asdict plus total and ratio."""
        return {**asdict(self), "total_bytes": self.total_bytes, "ratio": self.ratio}


@dataclass(slots=True)
class RunResults:
    """Everything one bench run measured (mutable: filled in as the run goes)."""

    throughput: list[ThroughputResult] = field(default_factory=list)
    miss_latency: list[MissLatencyResult] = field(default_factory=list)
    coalesce: list[CoalesceResult] = field(default_factory=list)
    redis_memory: list[RedisMemoryResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # ERROR lines each proxy configuration logged (e.g. tracebacks when wrk hangs up mid-body).
    proxy_log_errors: dict[str, int] = field(default_factory=dict)

    def direct(self, scenario: str) -> ThroughputResult | None:
        """The direct-to-upstream run a proxy scenario is compared with."""
        kind = direct_kind(scenario)
        return next((r for r in self.throughput if r.target == "direct" and r.scenario == kind), None)

    def row(self, scenario: str, target: str) -> ThroughputResult | None:
        """The row of ``scenario`` on ``target`` (a proxy cell label or a reference kind)."""
        return next((r for r in self.throughput if r.scenario == scenario and r.target == target), None)

    def reference(self, scenario: str) -> ThroughputResult | None:
        """The bare reference measured for ``scenario`` (whichever cell it was paired with)."""
        return next((r for r in self.throughput if r.scenario == scenario and r.is_reference), None)

    def problems(self) -> list[str]:
        """Errors and failed checks of every scenario."""
        found = list(self.errors)
        found += [p for r in self.throughput for p in r.problems]
        found += [p for r in self.miss_latency for p in r.problems]
        found += [p for r in self.coalesce for p in r.problems]
        found += [p for r in self.redis_memory for p in r.problems]
        return found

    def to_json(self) -> dict[str, Any]:
        """All results as JSON-ready data."""
        return {
            "throughput": [r.to_json() for r in self.throughput],
            "miss_latency": [r.to_json() for r in self.miss_latency],
            "coalesce": [r.to_json() for r in self.coalesce],
            "redis_memory": [r.to_json() for r in self.redis_memory],
            "errors": list(self.errors),
            "proxy_log_errors": dict(self.proxy_log_errors),
        }


def direct_kind(scenario: str) -> str:
    """Which direct-to-upstream baseline a scenario compares with (hot-off image uses the image one)."""
    return "image_hit" if scenario == "image_hit_redis" else scenario
