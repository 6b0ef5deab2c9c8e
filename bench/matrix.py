"""Which proxy configurations run which scenarios, and which bare reference each target compares with.

Each configuration gets a fresh proxy process; ``miss_latency`` runs first, on an idle proxy with
an empty store (the "unloaded" number the targets ask for).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

THROUGHPUT_SCENARIOS = (
    "image_hit",
    "image_hit_redis",
    "text_hit",
    "vision_hit",
    "stream_image_hit",
    "text_miss",
    "images_api_hit",
)
PROBE_SCENARIOS = ("miss_latency", "coalesce32", "redis_memory", "images_redis_memory")
SCENARIOS = THROUGHPUT_SCENARIOS + PROBE_SCENARIOS
DESCRIPTIONS = {
    "image_hit": "image (~1.5 MB PNG) cache hit, JSON",
    "image_hit_redis": "image hit read from Redis every request (PROXY_HOT_CACHE_BYTES=0)",
    "text_hit": "text cache hit, JSON",
    "vision_hit": "vision-edit hit: a ~2 MB request (the PNG inside `messages` + an instruction), "
    "text answer; primed by one miss",
    "stream_image_hit": "image cache hit replayed as SSE (stream: true)",
    "text_miss": "text miss, unique prompt per request (upstream latency 0)",
    "miss_latency": "added latency of a miss: sequential unique text prompts, proxy vs direct, interleaved",
    "coalesce32": "32 identical concurrent image misses -> upstream calls",
    "redis_memory": "Redis MEMORY USAGE of one cached image entry (all its keys) vs PNG bytes",
    "images_api_hit": "Images API (/v1/images/generations) hit, JSON: a ~1.5 MB b64_json PNG",
    "images_redis_memory": "Redis MEMORY USAGE of one cached /v1/images/generations answer vs PNG bytes",
}
# Scenarios with a direct-to-upstream row (context only; the targets use the bare references).
DIRECT_SCENARIOS = ("image_hit", "text_hit", "stream_image_hit", "text_miss", "images_api_hit")
_COMMON = ("image_hit", "text_hit", "stream_image_hit", "text_miss", "coalesce32")
# The configuration every ratio target is judged on: the default (Redis, hot tier on, one worker).
TARGET_CELL = "w1/redis"


@dataclass(frozen=True, slots=True)
class Reference:
    """A bare reference (``bench.bare``) measured interleaved with one proxy cell's scenario."""

    kind: str  # bare-bytes | bare-read | raw-redis-get
    route: str  # bench.bare route prefix; the scenario name follows it
    cell: str  # the proxy configuration it is paired with

    def path(self, scenario: str) -> str:
        """The reference server's route for ``scenario``."""
        return f"{self.route}/{scenario}"

    @property
    def from_redis(self) -> bool:
        """The body is read from Redis on every request (the bench SETs it there)."""
        return self.kind == "raw-redis-get"


REFERENCES = {
    "image_hit": Reference("bare-bytes", "/bytes", TARGET_CELL),
    "text_hit": Reference("bare-bytes", "/bytes", TARGET_CELL),
    "vision_hit": Reference("bare-read", "/read", TARGET_CELL),
    "image_hit_redis": Reference("raw-redis-get", "/redis", TARGET_CELL + "/hot-off"),
    "images_api_hit": Reference("bare-bytes", "/bytes", TARGET_CELL),
}


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


def reference_for(scenario: str, cell: str) -> Reference | None:
    """The reference to interleave with ``scenario`` on ``cell`` (None: a context row)."""
    reference = REFERENCES.get(scenario)
    return reference if reference is not None and reference.cell == cell else None


def plan(quick: bool, only: Iterable[str] = ()) -> list[Cell]:
    """The matrix; ``only`` keeps the named scenarios (configs left without any are dropped)."""
    cells = [
        Cell(ProxyConfig(1, "memory"), ("miss_latency", *_COMMON, "vision_hit", "images_api_hit")),
        Cell(
            ProxyConfig(1, "redis"),
            ("miss_latency", *_COMMON, "vision_hit", "images_api_hit", "redis_memory", "images_redis_memory"),
        ),
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
