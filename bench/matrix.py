"""Which proxy configurations run which scenarios, for the full run and for ``--quick``.

Each configuration gets a fresh proxy process; ``miss_latency`` runs first, on an idle proxy with
an empty store (the "unloaded" number the targets ask for).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

THROUGHPUT_SCENARIOS = ("image_hit", "image_hit_redis", "text_hit", "stream_image_hit", "text_miss")
PROBE_SCENARIOS = ("miss_latency", "coalesce32", "redis_memory")
SCENARIOS = THROUGHPUT_SCENARIOS + PROBE_SCENARIOS
DESCRIPTIONS = {
    "image_hit": "image (~1.5 MB PNG) cache hit, JSON",
    "image_hit_redis": "image hit read from Redis every request (PROXY_HOT_CACHE_BYTES=0)",
    "text_hit": "text cache hit, JSON",
    "stream_image_hit": "image cache hit replayed as SSE (stream: true)",
    "text_miss": "text miss, unique prompt per request (upstream latency 0)",
    "miss_latency": "added latency of a miss: sequential unique text prompts, proxy vs direct, interleaved",
    "coalesce32": "32 identical concurrent image misses -> upstream calls",
    "redis_memory": "Redis MEMORY USAGE of one cached image entry (all its keys) vs PNG bytes",
}
_COMMON = ("image_hit", "text_hit", "stream_image_hit", "text_miss", "coalesce32")


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """One way of running the proxy under test."""

    workers: int
    store: str  # "redis" or "memory"
    hot_cache: bool = True

    @property
    def label(self) -> str:
        """Short human name, e.g. ``w1/redis/hot-off``."""
        return f"w{self.workers}/{self.store}" + ("" if self.hot_cache else "/hot-off")

    @property
    def slug(self) -> str:
        """The label usable in file names and Redis keys."""
        return self.label.replace("/", "-")


@dataclass(frozen=True, slots=True)
class Cell:
    """A proxy configuration and the scenarios to run against it, in order."""

    config: ProxyConfig
    scenarios: tuple[str, ...]


def plan(quick: bool, only: Iterable[str] = ()) -> list[Cell]:
    """The matrix; ``only`` keeps the named scenarios (configs left without any are dropped)."""
    cells = [
        Cell(ProxyConfig(1, "memory"), ("miss_latency", *_COMMON)),
        Cell(ProxyConfig(1, "redis"), ("miss_latency", *_COMMON, "redis_memory")),
        Cell(ProxyConfig(1, "redis", hot_cache=False), ("image_hit_redis",)),
    ]
    if not quick:
        cells += [
            Cell(ProxyConfig(2, "memory"), _COMMON),
            Cell(ProxyConfig(2, "redis"), _COMMON),
            Cell(ProxyConfig(2, "redis", hot_cache=False), ("image_hit_redis",)),
        ]
    wanted = set(only)
    unknown = wanted - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"bench: unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    if not wanted:
        return cells
    kept = [Cell(c.config, tuple(s for s in c.scenarios if s in wanted)) for c in cells]
    return [c for c in kept if c.scenarios]
