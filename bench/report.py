"""``bench/RESULTS.md``: machine, tables, targets, notes; rendered from a run's results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.matrix import DESCRIPTIONS, THROUGHPUT_SCENARIOS
from bench.results import RunResults, ThroughputResult
from bench.targets import verdicts


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"


def _checks(problems: Sequence[str]) -> str:
    return "ok" if not problems else "FAIL: " + "; ".join(problems).replace("|", "/")


def _throughput_rows(results: RunResults) -> list[str]:
    order = {name: i for i, name in enumerate(THROUGHPUT_SCENARIOS)}

    def rank(row: ThroughputResult) -> tuple[int, int, str]:
        kind = 0 if row.is_reference else 1 if row.target == "direct" else 2
        return order.get(row.scenario, 99), kind, row.target

    lines = [
        "| scenario | target | req/s | p50 ms | p99 ms | CPU ms/req "
        "| req/s vs reference | req/s vs direct | checks |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in sorted(results.throughput, key=rank):
        direct = results.direct(row.scenario)
        reference = results.reference(row.scenario)
        vs_ref = vs_direct = "-"
        if reference is not None and not row.is_reference and row.target != "direct":
            vs_ref = _ratio(row.load.rps, reference.load.rps)
        if direct is not None and row.target != "direct" and not row.is_reference:
            vs_direct = _ratio(row.load.rps, direct.load.rps)
        rps = f"{row.load.rps:,.0f}"
        if len(row.runs) > 1:
            rps += " (" + "/".join(f"{r.rps:,.0f}" for r in row.runs) + ")"
        lines.append(
            f"| {row.scenario} | {_target_name(row)} | {rps} | {row.load.p50_ms:.2f} "
            f"| {row.load.p99_ms:.2f} | {row.cpu_ms_per_request:.3f} | {vs_ref} | {vs_direct} "
            f"| {_checks(row.problems)} |"
        )
    return lines


def _target_name(row: ThroughputResult) -> str:
    if row.is_reference:
        return f"**{row.target}** (with {row.pair})"
    return "direct (upstream)" if row.target == "direct" else f"proxy {row.target}"


def _miss_rows(results: RunResults) -> list[str]:
    lines = [
        "| proxy | samples | proxy p50 ms | proxy p99 ms | direct p50 ms | direct p99 ms "
        "| added p50 ms | added p99 ms | paired median added ms | bare-forward added p50 ms | checks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results.miss_latency:
        limit = "-" if r.forward_added_p50_ms is None else f"{r.forward_added_p50_ms:+.3f}"
        lines.append(
            f"| {r.target} | {r.samples} | {r.proxy_p50_ms:.3f} | {r.proxy_p99_ms:.3f} "
            f"| {r.direct_p50_ms:.3f} "
            f"| {r.direct_p99_ms:.3f} | {r.added_p50_ms:+.3f} | {r.added_p99_ms:+.3f} "
            f"| {r.paired_median_added_ms:+.3f} | {limit} | {_checks(r.problems)} |"
        )
    return lines


def _coalesce_rows(results: RunResults) -> list[str]:
    lines = [
        "| proxy | requests | upstream calls | expected | X-Cache | wall ms | checks |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for r in results.coalesce:
        x_cache = ", ".join(f"{k} {v}" for k, v in sorted(r.x_cache.items()))
        lines.append(
            f"| {r.target} | {r.requests} | {r.upstream_calls} | {r.expected_calls} | {x_cache} "
            f"| {r.elapsed_ms:.0f} | {_checks(r.problems)} |"
        )
    return lines


def _memory_rows(results: RunResults) -> list[str]:
    lines = ["| proxy | route | key (after prefix) | MEMORY USAGE bytes |", "|---|---|---|---:|"]
    for r in results.redis_memory:
        for key, size in sorted(r.keys.items()):
            lines.append(
                f"| {r.target} | {r.route} | `{key[:60]}{'...' if len(key) > 60 else ''}` | {size:,} |"
            )
        lines.append(
            f"| {r.target} | {r.route} | **total** vs PNG {r.png_bytes:,} B "
            f"| **{r.total_bytes:,}** ({r.ratio:.4f}x) |"
        )
        if r.problems:
            lines.append(f"| {r.target} | {r.route} | checks | {_checks(r.problems)} |")
    return lines


def _busy_warning(loadavg: str, info: Mapping[str, str]) -> list[str]:
    """A loud line when other work was running: the numbers are then contended and noisy."""
    try:
        before = float(loadavg.split(maxsplit=1)[0])
        cores = int(info.get("cores (os.cpu_count)", "0"))
    except (ValueError, IndexError):
        return []
    if cores and before > 0.5 * cores:
        return [
            "",
            f"**Warning:** the 1-minute load average was {before:g} on {cores} cores before the run:",
            "other work competed for the CPU, so req/s and latencies are noisy; the interleaved",
            "ratios and CPU ms/req are the most stable figures. Re-run on an idle machine before",
            "comparing absolute numbers between runs.",
        ]
    return []


def _ratio_table(results: RunResults) -> list[str]:
    lines = [
        "| target | reference row | proxy row | ratio | goal | verdict | CPU/request ratio |",
        "|---|---|---|---:|---|---|---:|",
    ]
    lines += [
        f"| {v.target} | {v.reference} | {v.measured} | {v.ratio} | {v.goal} | {v.mark} "
        f"| {'-' if v.cpu_ratio is None else f'{v.cpu_ratio:.2f}x'} |"
        for v in verdicts(results)
    ]
    return lines


_METHOD = """\
Each throughput ratio is proxy req/s over the req/s of a bare reference (`bench/bare.py`, an
aiohttp + uvloop server in its own process, like the proxy) answering the proxy's exact bytes
with the same header set, loaded by the same generator with the same request and settings:
`bare-bytes` answers ready bytes, `bare-read` first reads the whole (~2 MB) request body,
`raw-redis-get` answers one redis-py `GET` of a key holding the whole body (same private
`redis-server`). Reference and proxy runs alternate in short runs within the same half minute
(reference, proxy, reference, proxy, ...); each side's **best** run is reported (all runs in
parentheses and in `bench/out/latest.json`): on this shared 2-core VM other work only ever
slows a run down.
The last column divides the reference's CPU time per request by the proxy's (process tree,
/proc/<pid>/stat, in the reported runs): what the proxy spends per request relative to the
reference, which contention from other work moves much less than req/s. Absolute req/s below
are context only."""


def render(
    results: RunResults, info: Mapping[str, str], settings: Mapping[str, str], elapsed_s: float
) -> str:
    """The whole markdown document."""
    out = [
        "# Benchmark results",
        "",
        f"Generated by `python -m bench` on {settings['date']} in {elapsed_s:.0f} s "
        f"(commit {info.get('proxy commit', '?')}).",
        *_busy_warning(settings.get("load average (1/5/15 min) before / after", ""), info),
        "",
        "## Targets: ratios within this run",
        "",
        *_ratio_table(results),
        "",
        _METHOD,
        "",
        "## Throughput",
        "",
        *_throughput_rows(results),
        "",
        "## Added latency on a miss (unloaded, sequential, upstream latency 0)",
        "",
        *_miss_rows(results),
        "",
        "`bare-forward` is the limit of the stack for a miss, measured in the same rounds: an aiohttp +",
        "uvloop server (`bench/bare.py`) that reads the request and sends it on with aiohttp's client,",
        "nothing else (no parse, key, lookup, store or metrics).",
        "",
        "## 32 identical concurrent misses (upstream answers after 0.5 s)",
        "",
        *_coalesce_rows(results),
        "",
        "## Redis memory per cached image",
        "",
        *_memory_rows(results),
        "",
    ]
    out += ["## Machine and versions", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in info.items()]
    out += ["", "## Run settings", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in settings.items()]
    out += [
        "",
        "Everything runs on loopback on this one machine: the simulated upstream (`bench.upstream`,",
        "own process), the bare references (`bench.bare`, own process), the proxy",
        "(`python -m proxy serve`, own process(es)) and the load generator (own process) share the",
        f"{info.get('cores (os.cpu_count)', '?')} cores, so absolute numbers are lower than on a dedicated",
        "box; compare rows of one run. Latencies are the load generator's, send to last byte.",
        "CPU ms/req is user+system time of the target's process tree (/proc/<pid>/stat, workers",
        "included) divided by completed requests. `direct` rows send the same requests straight to",
        "the simulated upstream (context: it builds its answers, it does not serve ready bytes).",
        "References run one process; two-worker rows are compared with them as context only.",
        "",
        "Redis is a private `redis-server` the bench starts (unless `PROXY_BENCH_REDIS_URL` names",
        "one): the machine's own Redis runs in another login session, and with the kernel's",
        "scheduler autogroups it sat runnable but unscheduled for 0.15-0.65 s at a time while the",
        "bench saturated both cores, which showed as rare 0.25-1 s requests in two-worker cells",
        "(see `bench/redis_server.py`).",
        "",
    ]
    out += ["## Proxy log", "", "| proxy | ERROR records logged during its scenarios |", "|---|---:|"]
    out += [f"| {label} | {count} |" for label, count in results.proxy_log_errors.items()]
    out += ["", "Logs are kept in `bench/out/logs/` (gitignored).", ""]
    out += ["## Scenarios", ""]
    out += [f"- `{name}`: {text}" for name, text in DESCRIPTIONS.items()]
    out += [
        "- `w2/memory` coalesce expects one call per worker: without Redis, single flight is per process.",
        "",
        "LiteLLM's and Portkey's proxies side by side: `python -m bench rivals` (installs them under",
        "`bench/out/rivals/` on first use) writes its own section below.",
        "",
    ]
    if results.errors:
        out += ["## Errors", "", *[f"- {e}" for e in results.errors], ""]
    return "\n".join(out)
