"""One measured load run: the generator's summary plus the CPU the target spent meanwhile."""

from __future__ import annotations

from dataclasses import dataclass

from bench.context import Options, Target
from bench.load import LoadResult, LoadSpec, run_load
from bench.payloads import HEADERS
from bench.procs import cpu_seconds


@dataclass(frozen=True, slots=True)
class Measured:
    """One load run and the CPU the target's process tree spent during it."""

    load: LoadResult
    cpu_s: float

    @property
    def cpu_ms_per_request(self) -> float:
        """CPU milliseconds per completed request."""
        return self.cpu_s * 1000 / self.load.requests if self.load.requests else 0.0


async def measure(
    target: Target, body: bytes, opts: Options, *, unique: bool = False, duration: float | None = None
) -> Measured:
    """One closed-loop load run against ``target`` (wrk threads = its workers), ``opts.duration``
    seconds unless ``duration`` says otherwise."""
    cpu_before = cpu_seconds(target.pid)
    spec = LoadSpec(
        target.chat_url,
        body,
        HEADERS,
        duration or opts.duration,
        opts.concurrency,
        threads=target.workers,
        unique=unique,
    )
    load = await run_load(spec, opts.generator)
    return Measured(load, cpu_seconds(target.pid) - cpu_before)


def best(runs: list[Measured]) -> Measured:
    """The run with the most requests per second."""
    return max(runs, key=lambda run: run.load.rps)


def load_problems(runs: list[Measured]) -> list[str]:
    """Runs that completed nothing or saw errors."""
    problems: list[str] = []
    if any(run.load.requests == 0 for run in runs):
        problems.append("no request completed")
    errors = sum(run.load.errors for run in runs)
    non2xx = sum(run.load.non2xx for run in runs)
    if errors or non2xx:
        problems.append(f"{errors} socket errors, {non2xx} non-2xx responses")
    return problems
