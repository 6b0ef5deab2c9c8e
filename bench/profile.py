"""``python -m bench profile``: py-spy samples of the proxy serving text hits, vision-edit hits, misses.

For each scenario a fresh load runs against one proxy worker (Redis, hot tier on: the default)
while ``py-spy record --format raw`` samples the proxy process 250 times a second. py-spy pauses
the process for each sample (its default): with ``--nonblocking`` most stacks came back cut
short on this machine (two thirds of them lacked the process's outermost frames), which makes
"own time" meaningless. The pauses cost the proxy some throughput (the report shows the req/s
served while sampled). Written under ``bench/profiles/``: ``<scenario>.folded`` (collapsed
stacks, e.g. for a flame graph) and ``<scenario>.txt`` (the top frames by own and by total
time); RESULTS.md gets a short section. ``--native`` adds C frames (uvloop, the HTTP parser,
orjson, hashlib, the kernel calls) at a higher cost per sample, in ``<scenario>.native.*``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.context import Target
from bench.load import LoadResult, LoadSpec, run_load
from bench.machine import ROOT, loadavg
from bench.matrix import ProxyConfig
from bench.payloads import HEADERS, UNIQUE_MARK
from bench.runner import log
from bench.sections import put_section
from bench.stack import Stack, common_flags, stack, stamp
from bench.throughput import WORKLOADS, request_body, warm_hits

PROFILES = ROOT / "bench" / "profiles"
SCENARIOS = ("text_hit", "vision_hit", "text_miss")
_TOP = 25
_SETTLE_S = 1.0  # let the load reach its steady state before sampling


@dataclass(frozen=True, slots=True)
class Profile:
    """One profiled scenario: its stacks and the load served meanwhile."""

    scenario: str
    stacks: Counter[tuple[str, ...]]
    load: LoadResult

    @property
    def samples(self) -> int:
        """Samples in which the proxy was running Python code."""
        return sum(self.stacks.values())


def _frame(raw: str) -> str:
    """``func (path:line)`` with the path shortened to the repo or the installed package; an
    unresolved native address becomes its library (``[libc.so.6]``)."""
    name, _, where = raw.partition(" (")
    if name.startswith("0x"):
        return f"[{where.rstrip(')')}]"
    path = where.rstrip(")").rpartition(":")[0]
    for marker in ("site-packages/", str(ROOT) + "/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def parse_folded(text: str) -> Counter[tuple[str, ...]]:
    """py-spy's raw format: ``frame;frame;... count`` per line, outermost frame first."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks[tuple(_frame(f) for f in frames.split(";"))] += int(count)
    return stacks


def read_folded(path: Path) -> Counter[tuple[str, ...]]:
    """The stacks py-spy wrote (a missing file is a failed run, said loudly)."""
    try:
        return parse_folded(path.read_text())
    except OSError as exc:
        raise RuntimeError(f"py-spy wrote no profile: {exc}") from None


def top_frames(stacks: Counter[tuple[str, ...]], own: bool) -> list[tuple[str, int]]:
    """Functions by samples where they were the innermost frame (own) or anywhere on the stack."""
    counts: Counter[str] = Counter()
    for frames, count in stacks.items():
        for name in {frames[-1]} if own else set(frames):
            counts[name] += count
    return counts.most_common(_TOP)


def summary(profile: Profile, command: str) -> str:
    """The text file: what ran, then the two top lists."""
    total = profile.samples or 1
    lines = [
        f"py-spy profile of the proxy (one worker, Redis, hot tier on) during {profile.scenario} load",
        f"load: {profile.load.rps:,.0f} req/s, p50 {profile.load.p50_ms:.2f} ms, p99 "
        f"{profile.load.p99_ms:.2f} ms ({profile.load.generator}, 8 connections)",
        f"samples with Python running: {profile.samples}; {stamp()}; load average {loadavg()}",
        f"command: {command}",
        "",
    ]
    for title, own in (("own time (innermost Python frame)", True), ("total time (on the stack)", False)):
        lines += [f"Top {_TOP} by {title}:", f"{'samples':>8} {'%':>6}  function (file)"]
        lines += [f"{n:8d} {100 * n / total:6.1f}  {name}" for name, n in top_frames(profile.stacks, own)]
        lines.append("")
    return "\n".join(lines)


def _py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit(
            "bench profile: py-spy is not installed (pip install -e '.[bench]', or make profile)"
        )
    return found


async def profile_scenario(
    bench: Stack, target: Target, pid: int, scenario: str, seconds: float, folded: Path, *, native: bool
) -> tuple[Profile, str]:
    """Warm, start the load, sample the proxy for ``seconds`` of it."""
    work = WORKLOADS[scenario]
    prompt = f"profile {scenario} {bench.opts.run_id}" + (f" {UNIQUE_MARK}" if work.unique else "")
    body = request_body(scenario, prompt, bench.opts)
    if not work.unique:
        _, problems = await warm_hits(target, body, body, stream=False)
        if problems:
            raise RuntimeError(f"{scenario}: {problems}")
    spec = LoadSpec(target.chat_url, body, HEADERS, seconds + 2 * _SETTLE_S, 8, unique=work.unique)
    load = asyncio.create_task(run_load(spec, bench.opts.generator))
    await asyncio.sleep(_SETTLE_S)
    command = [_py_spy(), "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", "250"]
    command += ["--function"]  # frames by function, not by line: the folded file stays small
    command += ["--native"] if native else []
    command += ["--format", "raw", "--output", str(folded)]
    spy = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await spy.communicate()
    result = await load
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}")
    shown = " ".join(["py-spy", *command[1:3], "<proxy pid>", *command[4:-1], folded.name])
    return Profile(scenario, read_folded(folded), result), shown


def _section_rows(profile: Profile) -> list[str]:
    total = profile.samples or 1
    rows = [
        f"`{profile.scenario}` ({profile.load.rps:,.0f} req/s while sampled, {profile.samples} samples):",
        "",
        "| own % | function (file) |",
        "|---:|---|",
    ]
    rows += [f"| {100 * n / total:.1f} | `{name}` |" for name, n in top_frames(profile.stacks, own=True)[:5]]
    return [*rows, ""]


async def _run(args: argparse.Namespace) -> int:
    args.profiles.mkdir(parents=True, exist_ok=True)
    section = [
        "## Profiles (py-spy" + (", with native frames)" if args.native else ")"),
        "",
        f"Measured {stamp()} by `python -m bench profile`; load average "
        f"before {loadavg()}. Top 5 functions by own time per scenario; the full lists are in",
        f"`bench/profiles/<scenario>{'.native' if args.native else ''}.txt`, the collapsed stacks in "
        f"`.folded` files beside them.",
        "",
    ]
    async with contextlib.AsyncExitStack() as resources:
        bench = await resources.enter_async_context(stack(args.out, args.image_bytes, args.loadgen))
        proxy = await resources.enter_async_context(bench.proxy(ProxyConfig(1, "redis"), "profile"))
        for scenario in args.scenario or SCENARIOS:
            name = scenario + (".native" if args.native else "")
            folded = args.profiles / f"{name}.folded"
            profile, command = await profile_scenario(
                bench, proxy.target, proxy.pid, scenario, args.seconds, folded, native=args.native
            )
            (args.profiles / f"{name}.txt").write_text(summary(profile, command))
            log(f"[profile] {scenario}: {profile.samples} samples, {profile.load.rps:,.0f} req/s")
            section += _section_rows(profile)
    put_section(args.results, "profile-native" if args.native else "profile", "\n".join(section))
    log(f"bench profile: wrote {args.profiles}/ and a section of {args.results}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench profile``."""
    parser = argparse.ArgumentParser(prog="python -m bench profile", description=__doc__)
    common_flags(parser)
    parser.add_argument("--seconds", type=float, default=10.0, help="sampling time per scenario")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable (default: all)")
    parser.add_argument("--profiles", type=Path, default=PROFILES, help="where the profiles go")
    parser.add_argument("--native", action="store_true", help="C frames too (costlier samples)")
    return asyncio.run(_run(parser.parse_args(argv)))
