"""Results of ``python -m bench growth`` and their section of ``bench/RESULTS.md``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.load import LoadResult
from bench.procs import mib


@dataclass(frozen=True, slots=True)
class WorkerResult:
    """Hits on one key against N worker processes; CPU in seconds over the run's wall time."""

    scenario: str
    workers: int
    load: LoadResult
    wall_s: float
    proxy_cpu_s: float
    machine_busy_s: float  # every process on the machine: proxy, wrk, Redis, neighbours
    problems: tuple[str, ...]

    @property
    def proxy_cores(self) -> float:
        """Cores the proxy kept busy on average while loaded (the load generator's own start-up,
        inside ``wall_s``, leaves the proxy idle)."""
        return self.proxy_cpu_s / self.load.duration_s if self.load.duration_s else 0.0

    @property
    def machine_cores(self) -> float:
        """Cores the whole machine kept busy on average while loaded."""
        return self.machine_busy_s / self.load.duration_s if self.load.duration_s else 0.0

    @property
    def rps_per_core(self) -> float:
        """Requests per second per busy proxy core."""
        return self.load.rps / self.proxy_cores if self.proxy_cores else 0.0


@dataclass(frozen=True, slots=True)
class HotTierResult:
    """The proxy's RSS in one state of the hot tier, under one allocator setting."""

    allocator: str
    state: str
    rss: int
    problem: str


@dataclass(frozen=True, slots=True)
class LevelResult:
    """The cache at one size: how it was filled, what Redis holds, how fast hits are."""

    entries: int
    text_entries: int
    image_entries: int
    fill_seconds: float
    entry_keys: int
    used_memory: int
    dataset: int  # used_memory_dataset: keys and values, without client buffers
    dataset_before: int  # at the previous size (or empty)
    entries_before: int
    retried: dict[str, int]  # writes the proxy did not store at first (and that were sent again)
    bypassed_hits: int  # hits served from upstream because a lookup outlived the store timeout
    redis_keys: int
    text_hit: LoadResult
    image_hit: LoadResult
    proxy_rss: int
    problems: tuple[str, ...]

    @property
    def bytes_per_added_entry(self) -> float:
        """Redis dataset bytes per entry added since the previous size (the first size: since
        empty, so it carries the one shared PNG)."""
        added = self.entries - self.entries_before
        return (self.dataset - self.dataset_before) / added if added else 0.0


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """One ``POST /admin/cache/purge`` of the namespace holding every entry."""

    entries: int
    deleted: int
    seconds: float
    entry_keys_left: int
    used_memory_after: int
    problem: str


def _hit(load: LoadResult) -> str:
    return f"{load.rps:,.0f} req/s, p50 {load.p50_ms:.2f} / p99 {load.p99_ms:.2f} ms"


def render(
    measured: Mapping[str, object],
    workers: Sequence[WorkerResult],
    hot: Sequence[HotTierResult],
    levels: Sequence[LevelResult],
    purge: PurgeResult,
    image_share: float,
) -> str:
    """The ``growth`` section."""
    bound = int(str(measured["hot tier bound"]))
    out = [
        "## Cost growth (`python -m bench growth`)",
        "",
        f"Measured {measured['date']} in {float(str(measured['elapsed_s'])):.0f} s; load average before / "
        f"after {measured['load average before / after']} (the machine is shared with other work: "
        "compare rows of this section with each other, not with other runs). Private redis-server "
        f"{measured['redis-server']}; {measured['generator']}, 8 connections, "
        f"{measured['duration per load run']} s per load run; one proxy worker, Redis, hot tier "
        "on (the defaults) unless a row says otherwise.",
        "",
        "### Hit latency and Redis memory by cached entries",
        "",
        f"Mix: {100 - 100 * image_share:.0f}% text entries (one distinct prompt each), "
        f"{100 * image_share:.0f}% image entries that differ only in `max_tokens` and so share one "
        "~1.5 MB PNG blob (Redis memory then shows each entry's own overhead; every distinct PNG "
        "adds ~1.007x its size, see the matrix). Every entry was written through the proxy: a miss "
        "it stored (32 concurrent writers). Hits pick a random entry of their kind per request, so "
        "most of them revalidate with Redis (the hot tier confirms an entry with a `GET` once it is "
        "older than 1 s) and image entries beyond the hot tier's ~70 are read from Redis.",
        "",
        "| cached entries (text + image) | written in | Redis `used_memory` (dataset) "
        "| dataset per added entry | text hit, random of all text | image hit, random of all image "
        "| proxy RSS | checks |",
        "|---|---:|---:|---:|---|---|---:|---|",
    ]
    for level in levels:
        checks = "ok" if not level.problems else "FAIL: " + "; ".join(level.problems)
        if level.retried:
            checks += f"; not stored at first, written again: {level.retried}"
        if level.bypassed_hits:
            checks += f"; {level.bypassed_hits} hits bypassed (store timeout)"
        out.append(
            f"| {level.entries:,} ({level.text_entries:,} + {level.image_entries:,}) "
            f"| {level.fill_seconds:.0f} s | {mib(level.used_memory)} ({mib(level.dataset)}) "
            f"| {level.bytes_per_added_entry:,.0f} B "
            f"| {_hit(level.text_hit)} | {_hit(level.image_hit)} | {mib(level.proxy_rss)} | {checks} |"
        )
    out += [
        "",
        "### Purging a namespace",
        "",
        "| entries in the namespace | deleted | `POST /admin/cache/purge` took | entry keys left "
        "| Redis `used_memory` after | checks |",
        "|---:|---:|---:|---:|---:|---|",
        f"| {purge.entries:,} | {purge.deleted:,} | {purge.seconds:.2f} s | {purge.entry_keys_left:,} "
        f"| {mib(purge.used_memory_after)} | {purge.problem or 'ok'} |",
        "",
        "### Proxy RSS and the hot tier",
        "",
        f"Bound `PROXY_HOT_CACHE_BYTES` = {mib(bound)} (default). A hot image entry holds its stored "
        "record, the ready ~2 MB JSON body and the ~1.5 MB PNG, about 3.5 MB. Each allocator setting "
        "gets a fresh proxy; the second fixes glibc's mmap threshold at 128 KiB (setting it turns off "
        "the dynamic raise that otherwise moves every ~2 MB buffer into the heap after the first is "
        "freed, mallopt(3)), so large buffers return to the system when freed.",
        "",
        "| allocator | state | proxy RSS | vs empty | checks |",
        "|---|---|---:|---:|---|",
    ]
    empty = {h.allocator: h.rss for h in reversed(hot)}  # each setting's first row
    for h in hot:
        delta = h.rss - empty[h.allocator]
        out.append(
            f"| {h.allocator} | {h.state} | {mib(h.rss)} | {'+' if delta >= 0 else '-'}{mib(abs(delta))} "
            f"| {h.problem or 'ok'} |"
        )
    out += [
        "",
        "### Two workers vs one (2 cores)",
        "",
        "Hits on one key; wrk threads = workers. Busy cores = CPU seconds / seconds under load; "
        "the machine column counts every process (proxy, wrk, Redis, and whatever else ran).",
        "",
        "| scenario | workers | req/s | p50 / p99 ms | proxy busy cores | req/s per busy proxy core "
        "| machine busy cores | checks |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for w in workers:
        checks = "ok" if not w.problems else "FAIL: " + "; ".join(w.problems)
        out.append(
            f"| {w.scenario} | {w.workers} | {w.load.rps:,.0f} | {w.load.p50_ms:.2f} / {w.load.p99_ms:.2f} "
            f"| {w.proxy_cores:.2f} | {w.rps_per_core:,.0f} | {w.machine_cores:.2f} | {checks} |"
        )
    return "\n".join([*out, ""])
