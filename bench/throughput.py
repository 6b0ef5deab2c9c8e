"""Closed-loop throughput scenarios (hits, misses), against the proxy or straight at the upstream.

Hit scenarios are warmed first (one miss, then HITs until every worker answers from cache) and
checked before and after the load: a hit must rebuild the miss's exact bytes (or, streamed, the
same text and image), the upstream must see no calls and the proxy's own counters no non-hits.

Where a target compares the proxy with a bare reference (``bench.matrix.REFERENCES``), the two
are loaded alternately in short runs — reference, proxy, reference, proxy, ... — so both see the
same machine; each side reports its best run (the least disturbed by the neighbours on this
shared VM), and every run is kept in the raw JSON.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import aiohttp

from bench.context import CHAT_PATH, Options, Reply, Target, UpstreamControl, post
from bench.matrix import Reference, reference_for
from bench.measure import Measured, best, load_problems, measure
from bench.payloads import (
    IMAGE_MODEL,
    IMAGES_MODEL,
    IMAGES_PATH,
    TEXT_MODEL,
    UNIQUE_MARK,
    b64_of,
    chat_body,
    content_of,
    image_url_of,
    images_body,
    sse_summary,
    vision_body,
)
from bench.references import BareServer
from bench.results import ThroughputResult

_STEADY_HITS = 10  # consecutive HITs on fresh connections: with SO_REUSEPORT every worker is warm
_WARM_ATTEMPTS = 80
_CACHE_SAMPLE = re.compile(r'^llm_proxy_cache_results_total\{[^}]*result="([^"]*)"[^}]*\}\s+(\S+)$')


@dataclass(frozen=True, slots=True)
class Workload:
    """What a throughput scenario sends."""

    model: str
    stream: bool = False
    unique: bool = False
    vision: bool = False  # the request carries a PNG in ``messages`` (the edit workflow)
    path: str = CHAT_PATH  # the route it goes to on the proxy and the upstream
    calls: str = "chat"  # the simulator's counter of that route

    def aimed(self, target: Target) -> Target:
        """``target`` on this workload's route (a bare reference keeps its own)."""
        return dataclasses.replace(target, path=self.path) if target.path == CHAT_PATH else target


# The vision-edit request goes to a vision-capable text model: the answer is text, so the
# scenario measures what a ~2 MB *request* costs a hit (parse, key, hash), as its target asks.
WORKLOADS = {
    "image_hit": Workload(IMAGE_MODEL),
    "image_hit_redis": Workload(IMAGE_MODEL),
    "text_hit": Workload(TEXT_MODEL),
    "vision_hit": Workload(TEXT_MODEL, vision=True),
    "stream_image_hit": Workload(IMAGE_MODEL, stream=True),
    "text_miss": Workload(TEXT_MODEL, unique=True),
    "images_api_hit": Workload(IMAGES_MODEL, path=IMAGES_PATH, calls="images"),
}


def request_body(scenario: str, prompt: str, opts: Options, *, stream: bool | None = None) -> bytes:
    """What ``scenario`` sends (``stream`` overrides the workload's, for the warm-up miss)."""
    work = WORKLOADS[scenario]
    if work.vision:
        return vision_body(work.model, prompt, opts.image_bytes)
    if work.path == IMAGES_PATH:
        return images_body(prompt)
    return chat_body(work.model, prompt, stream=work.stream if stream is None else stream)


def check_hit(reply: Reply, reference: bytes, stream: bool, exact: bool = True) -> str | None:
    """Why ``reply`` is not a correct hit for the miss that produced ``reference`` (None if it is).

    ``exact``: byte-identical to the miss. Off where each worker has its own store (memory store,
    several workers): each made its own miss, so ids differ while text and image must not.
    """
    if reply.status != 200:
        return f"hit answered {reply.status}"
    if reply.x_cache != "HIT":
        return f"expected X-Cache HIT, got {reply.x_cache!r}"
    if not stream and exact:
        return None if reply.body == reference else "hit body differs from the miss body"
    if not stream:
        same = image_url_of(reply.body) == image_url_of(reference) and b64_of(reply.body) == b64_of(reference)
        return None if same and content_of(reply.body) == content_of(reference) else "hit content differs"
    text, image, done = sse_summary(reply.body)
    if not done:
        return "replayed stream did not end with [DONE]"
    if image != image_url_of(reference) or text != content_of(reference):
        return "replayed stream's text/image differ from the miss"
    return None


async def cache_results(session: aiohttp.ClientSession, target: Target) -> dict[str, int]:
    """The proxy's ``llm_proxy_cache_results_total`` summed by result (all workers)."""
    async with session.get(target.base + "/metrics") as response:
        text = await response.text()
    totals: dict[str, int] = {}
    for line in text.splitlines():
        match = _CACHE_SAMPLE.match(line)
        if match:
            result = match.group(1).lower()
            totals[result] = totals.get(result, 0) + int(float(match.group(2)))
    return totals


def exact_hits(target: Target) -> bool:
    """Whether every hit must repeat the one miss byte for byte (one shared store)."""
    return target.store != "memory" or target.workers == 1


async def warm_hits(
    target: Target, reference_body: bytes, body: bytes, stream: bool
) -> tuple[bytes, list[str]]:
    """Make the entry (a non-streamed miss) and wait until steady HITs; returns the miss body."""
    connector = aiohttp.TCPConnector(force_close=True)  # new connections reach every worker
    async with aiohttp.ClientSession(connector=connector) as fresh:
        first = await post(fresh, target.chat_url, reference_body)
        if first.status != 200:
            return first.body, [f"first request answered {first.status}: {first.body[:200]!r}"]
        steady = 0
        for _ in range(_WARM_ATTEMPTS):
            reply = await post(fresh, target.chat_url, body)
            if reply.x_cache != "HIT":
                steady = 0
                continue
            problem = check_hit(reply, first.body, stream, exact_hits(target))
            if problem:
                return first.body, [f"warm-up: {problem}"]
            steady += 1
            if steady >= _STEADY_HITS:
                return first.body, []
    return first.body, [f"no {_STEADY_HITS} consecutive HITs after {_WARM_ATTEMPTS} requests"]


def _row(
    scenario: str,
    target: Target,
    opts: Options,
    runs: list[Measured],
    pair: str,
    *,
    problems: list[str],
    upstream_calls: int = 0,
    cache_results: dict[str, int] | None = None,
) -> ThroughputResult:
    top = best(runs)
    return ThroughputResult(
        scenario=scenario,
        target=target.label,
        workers=target.workers,
        store=target.store,
        hot_cache=target.hot_cache,
        concurrency=opts.concurrency,
        load=top.load,
        runs=tuple(run.load for run in runs),
        cpu_ms_per_request=top.cpu_ms_per_request,
        cpu_ms_runs=tuple(run.cpu_ms_per_request for run in runs),
        pair=pair,
        upstream_calls=upstream_calls,
        cache_results=cache_results or {},
        problems=tuple(problems),
    )


async def _reference_row(
    scenario: str,
    reference: Reference,
    ref_target: Target,
    runs: list[Measured],
    opts: Options,
    session: aiohttp.ClientSession,
    body: bytes,
    expected: bytes,
) -> ThroughputResult:
    """The reference's row; it must have answered the proxy's exact bytes."""
    problems = load_problems(runs)
    sample = await post(session, ref_target.chat_url, body)
    if sample.status != 200 or sample.body != expected:
        problems.append(f"{reference.kind} answered {sample.status} with other bytes than the proxy")
    return _row(scenario, ref_target, opts, runs, reference.cell, problems=problems)


async def run_throughput(
    scenario: str,
    target: Target,
    opts: Options,
    upstream: UpstreamControl,
    session: aiohttp.ClientSession,
    bare: BareServer | None = None,
) -> list[ThroughputResult]:
    """Warm, measure (load + CPU + counters; interleaved with its reference where one is paired),
    check; the proxy's row, then the reference's row if one ran."""
    work = WORKLOADS[scenario]
    target = work.aimed(target)
    prompt = f"bench {scenario} {opts.run_id} {target.label}" + (f" {UNIQUE_MARK}" if work.unique else "")
    body = request_body(scenario, prompt, opts)
    problems: list[str] = []
    reference = b""
    hits = target.is_proxy and not work.unique
    if hits:
        reference_body = request_body(scenario, prompt, opts, stream=False)
        reference, problems = await warm_hits(target, reference_body, body, work.stream)
    else:
        first = await post(session, target.chat_url, body.replace(UNIQUE_MARK.encode(), b"warm"))
        if first.status != 200:
            problems.append(f"warm-up answered {first.status}")
    counters_before = await cache_results(session, target) if target.is_proxy else {}
    calls_before = await upstream.calls(work.calls)
    pairing = reference_for(scenario, target.label) if bare is not None and hits and not problems else None
    runs: list[Measured] = []
    ref_runs: list[Measured] = []
    ref_target: Target | None = None
    if pairing is None or bare is None:
        runs.append(await measure(target, body, opts, unique=work.unique))
    else:
        ref_target = await bare.prepare(scenario, pairing, reference)
        for _ in range(opts.pairs):
            ref_runs.append(await measure(ref_target, body, opts, duration=opts.pair_duration))
            runs.append(await measure(target, body, opts, duration=opts.pair_duration))
    calls = await upstream.calls(work.calls) - calls_before
    deltas: dict[str, int] = {}
    if target.is_proxy:
        after = await cache_results(session, target)
        deltas = {
            k: v - counters_before.get(k, 0) for k, v in after.items() if v != counters_before.get(k, 0)
        }
    problems += load_problems(runs)
    requests = sum(run.load.requests for run in runs)
    if hits:
        sample = await post(session, target.chat_url, body)
        problem = check_hit(sample, reference, work.stream, exact_hits(target))
        if problem:
            problems.append(f"after load: {problem}")
        if calls:
            problems.append(f"{calls} upstream calls during a hit run")
        non_hits = sum(v for k, v in deltas.items() if k != "hit")
        if non_hits:
            problems.append(f"{non_hits} non-HIT cache results during a hit run")
    elif work.unique and calls < requests:
        problems.append(f"only {calls} upstream calls for {requests} unique misses")
    rows = [
        _row(
            scenario,
            target,
            opts,
            runs,
            pairing.kind if pairing is not None else "",
            problems=problems,
            upstream_calls=calls,
            cache_results=deltas,
        )
    ]
    if pairing is not None and ref_target is not None:
        rows.append(
            await _reference_row(scenario, pairing, ref_target, ref_runs, opts, session, body, reference)
        )
    return rows
