"""Closed-loop throughput scenarios (hits, misses), against the proxy or straight at the upstream.

Hit scenarios are warmed first (one miss, then HITs until every worker answers from cache) and
checked before and after the load: a hit must rebuild the miss's exact bytes (or, streamed, the
same text and image), the upstream must see no calls and the proxy's own counters no non-hits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aiohttp

from bench.context import Options, Reply, Target, UpstreamControl, post
from bench.load import LoadSpec, run_load
from bench.payloads import (
    HEADERS,
    IMAGE_MODEL,
    TEXT_MODEL,
    UNIQUE_MARK,
    chat_body,
    content_of,
    image_url_of,
    sse_summary,
)
from bench.procs import cpu_seconds
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


WORKLOADS = {
    "image_hit": Workload(IMAGE_MODEL),
    "image_hit_redis": Workload(IMAGE_MODEL),
    "text_hit": Workload(TEXT_MODEL),
    "stream_image_hit": Workload(IMAGE_MODEL, stream=True),
    "text_miss": Workload(TEXT_MODEL, unique=True),
}


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
        same = image_url_of(reply.body) == image_url_of(reference)
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


async def run_throughput(
    scenario: str, target: Target, opts: Options, upstream: UpstreamControl, session: aiohttp.ClientSession
) -> ThroughputResult:
    """Warm, measure (load + CPU + counters), check; one table row."""
    work = WORKLOADS[scenario]
    prompt = f"bench {scenario} {opts.run_id} {target.label}" + (f" {UNIQUE_MARK}" if work.unique else "")
    body = chat_body(work.model, prompt, stream=work.stream)
    problems: list[str] = []
    reference = b""
    hits = target.is_proxy and not work.unique
    if hits:
        reference_body = chat_body(work.model, prompt, stream=False)
        reference, problems = await warm_hits(target, reference_body, body, work.stream)
    else:
        first = await post(session, target.chat_url, body.replace(UNIQUE_MARK.encode(), b"warm"))
        if first.status != 200:
            problems.append(f"warm-up answered {first.status}")
    counters_before = await cache_results(session, target) if target.is_proxy else {}
    calls_before = await upstream.chat_calls()
    cpu_before = cpu_seconds(target.pid)
    spec = LoadSpec(
        target.chat_url,
        body,
        HEADERS,
        opts.duration,
        opts.concurrency,
        threads=target.workers,
        unique=work.unique,
    )
    load = await run_load(spec, opts.generator)
    cpu = cpu_seconds(target.pid) - cpu_before
    calls = await upstream.chat_calls() - calls_before
    deltas: dict[str, int] = {}
    if target.is_proxy:
        after = await cache_results(session, target)
        deltas = {
            k: v - counters_before.get(k, 0) for k, v in after.items() if v != counters_before.get(k, 0)
        }
    if load.requests == 0:
        problems.append("no request completed")
    if load.errors or load.non2xx:
        problems.append(f"{load.errors} socket errors, {load.non2xx} non-2xx responses")
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
    elif work.unique and calls < load.requests:
        problems.append(f"only {calls} upstream calls for {load.requests} unique misses")
    return ThroughputResult(
        scenario=scenario,
        target=target.label,
        workers=target.workers,
        store=target.store,
        hot_cache=target.hot_cache,
        concurrency=opts.concurrency,
        load=load,
        cpu_ms_per_request=cpu * 1000 / load.requests if load.requests else 0.0,
        upstream_calls=calls,
        cache_results=deltas,
        problems=tuple(problems),
    )
