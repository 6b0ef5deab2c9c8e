"""Every Grafana panel query, evaluated by a real Prometheus scraping a real proxy after real traffic.

The static test pins names and syntax; this one proves each panel shows data (no empty panel, no
NaN) and that the numbers are right: spend and savings to the micro-dollar, requests as sent.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis

from tests.dashboard_exprs import panel_expressions
from tests.e2e_helpers import IMAGE_MODEL, TEXT_MODEL, chat_body, send_raw, sse_chunks
from tests.fake_upstream import FakeUpstream
from tests.prometheus_server import JOB, PrometheusServer, prometheus_binary
from tests.proxy_harness import ProxyServer, proxy_settings

DASHBOARD = Path(__file__).resolve().parents[1] / "grafana" / "dashboards" / "llm-proxy.json"
UNKNOWN_MODEL = "mystery-model-1"
BURST = 4
# USD per million (input, output) tokens, written out here so the proxy's pricing is checked,
# not reused. One gemini image is 1290 output tokens at $30/M = $0.0387.
PRICES = {IMAGE_MODEL: (Fraction("0.30"), Fraction(30)), TEXT_MODEL: (Fraction("0.15"), Fraction("0.60"))}
IMAGE_COST_USD = 0.0387
HIT_LIKE = frozenset({"HIT", "COALESCED"})
# Metrics this traffic cannot produce (no managed keys, no store failure): their panels show
# the `or ... vector(0)` fallback here; test_dashboards_budget_live.py checks the per-key ones.
WITHOUT_SAMPLES = frozenset(
    {
        "llm_proxy_key_budget_usd",
        "llm_proxy_key_budget_remaining_usd",
        "llm_proxy_budget_rejections_total",
        "llm_proxy_store_errors_total",
    }
)

LIVE = pytest.mark.asyncio(loop_scope="module")
pytestmark = pytest.mark.timeout(90)


def micro_cost(model: str, usage: dict[str, int]) -> int:
    """List price in micro-USD, rounded half up; 0 for a model without a price."""
    if model not in PRICES:
        return 0
    per_in, per_out = PRICES[model]
    exact = usage["prompt_tokens"] * per_in + usage["completion_tokens"] * per_out
    return math.floor(exact + Fraction(1, 2))


@dataclass(slots=True)
class Traffic:
    """What the client sent and saw: the ground truth the metrics are checked against."""

    results: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    spent_micro: int = 0
    saved_micro: int = 0
    image_hits: int = 0
    image_saved_micro: int = 0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def seen(self, model: str, status: int, cache: str, usage: dict[str, int] | None) -> None:
        self.statuses[status] += 1
        self.results[cache] += 1
        if usage is None:
            return
        cost = micro_cost(model, usage)
        if cache in HIT_LIKE:
            self.saved_micro += cost
            if model == IMAGE_MODEL:
                assert usage["completion_tokens"] == 1290, usage
                self.image_hits += 1
                self.image_saved_micro += cost
        elif status == 200:
            self.spent_micro += cost


@dataclass(frozen=True, slots=True)
class LiveRun:
    """A finished mixed run: Prometheus' URL, the pinned evaluation time and the ground truth."""

    prom: PrometheusServer
    at: float
    traffic: Traffic
    metrics_text: str


async def _chat(proxy: ProxyServer, traffic: Traffic, body: dict[str, Any]) -> str:
    reply = await send_raw(f"{proxy.url}/chat/completions", body)
    cache = reply.headers.get("X-Cache", "none")
    usage: dict[str, int] | None = None
    if reply.status == 200 and body.get("stream"):
        usage = next(c["usage"] for c in sse_chunks(reply.body) if c.get("usage"))
    elif reply.status == 200:
        usage = reply.json()["usage"]
    traffic.seen(body["model"], reply.status, cache, usage)
    return cache


async def _phase(proxy: ProxyServer, upstream: FakeUpstream, traffic: Traffic, phase: int) -> None:
    """One round of every kind of request; two rounds make every counter grow between scrapes."""
    image = chat_body(f"a red bicycle, take {phase}", IMAGE_MODEL)
    text = chat_body(f"hello, round {phase}")
    assert await _chat(proxy, traffic, image) == "MISS"
    assert await _chat(proxy, traffic, image) == "HIT"
    assert await _chat(proxy, traffic, text) == "MISS"
    assert await _chat(proxy, traffic, text) == "HIT"
    streamed = {**text, "stream": True, "stream_options": {"include_usage": True}}
    assert await _chat(proxy, traffic, streamed) == "HIT"
    upstream.state.latency_s = 0.5  # the leader is slow, so the burst joins its flight
    burst = chat_body(f"everyone asks this at once, round {phase}")
    caches = await asyncio.gather(*(_chat(proxy, traffic, burst) for _ in range(BURST)))
    upstream.state.latency_s = 0.0
    assert sorted(caches) == ["COALESCED"] * (BURST - 1) + ["MISS"], caches
    upstream.state.fail_next.append((500, {"error": {"message": "boom", "type": "server_error"}}))
    await _chat(proxy, traffic, chat_body(f"this one fails, round {phase}"))
    unknown = chat_body(f"who prices me, round {phase}", UNKNOWN_MODEL)
    assert await _chat(proxy, traffic, unknown) == "MISS"
    assert await _chat(proxy, traffic, unknown) == "HIT"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveRun]:
    """Two rounds of mixed traffic through a Redis-backed proxy, scraped by Prometheus throughout."""
    prefix = f"lcptest-{uuid.uuid4().hex[:12]}"
    traffic = Traffic()
    async with (
        FakeUpstream() as upstream,
        ProxyServer(proxy_settings(upstream.url, redis_url, prefix)) as proxy,
        PrometheusServer(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{proxy.port}") as prom,
    ):
        await prom.wait_for_scrapes(time.time() - 60, 1)
        for phase in (1, 2):
            await _phase(proxy, upstream, traffic, phase)
            # Round 1 is scraped before round 2, so every series grows inside the rate window;
            # round 2 is followed by three scrapes of the final state.
            at = await prom.wait_for_scrapes(time.time(), 1 if phase == 1 else 3)
        async with aiohttp.ClientSession() as session, session.get(f"{proxy.base}/metrics") as response:
            metrics_text = await response.text()
        yield LiveRun(prom, at, traffic, metrics_text)
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


def test_prometheus_server_is_installed() -> None:
    """A machine without Prometheus fails here, loudly, instead of skipping the dashboard check."""
    assert Path(prometheus_binary()).is_file()


def test_the_traffic_covered_every_outcome(live: LiveRun) -> None:
    """The run produced misses, hits, coalesced answers, 5xx errors and image hits to check against."""
    assert {"MISS", "HIT", "COALESCED"} <= set(live.traffic.results)
    assert live.traffic.statuses[500] == 2
    assert live.traffic.image_hits == 2


@LIVE
async def test_every_panel_query_returns_finite_data(live: LiveRun) -> None:
    """Each expression of each panel yields at least one sample and none is NaN or infinite."""
    exprs = panel_expressions(json.loads(DASHBOARD.read_text()))
    assert len(exprs) >= 20
    problems = []
    for title, expr in exprs:
        result = await live.prom.query(expr, live.at)
        values = [float(sample["value"][1]) for sample in result]
        if not values or not all(math.isfinite(v) for v in values):
            problems.append(f"{title!r}: {expr} -> {result}")
    assert not problems, "panels without data:\n" + "\n".join(problems)


@LIVE
async def test_every_dashboard_metric_has_samples_in_prometheus(live: LiveRun) -> None:
    """Fallbacks like `or vector(0)` cannot hide a misspelt metric: each name has scraped series."""
    names = set(re.findall(r"llm_proxy_\w+", DASHBOARD.read_text())) - WITHOUT_SAMPLES
    missing = [name for name in sorted(names) if not await live.prom.query(name, live.at)]
    assert not missing, missing


@LIVE
async def test_savings_and_spend_match_the_responses_usage(live: LiveRun) -> None:
    """Saved USD = list price of every hit's usage (about $0.0387 per image hit); spend likewise."""
    traffic, prom, at = live.traffic, live.prom, live.at
    saved = await prom.value("sum(llm_proxy_cost_saved_usd_total)", at)
    image_saved = await prom.value(f'sum(llm_proxy_cost_saved_usd_total{{model="{IMAGE_MODEL}"}})', at)
    spent = await prom.value("sum(llm_proxy_cost_usd_total)", at)
    panel = await prom.value("(sum(increase(llm_proxy_cost_saved_usd_total[5m]))) or vector(0)", at)
    assert image_saved == pytest.approx(traffic.image_saved_micro / 1e6, abs=1e-9)
    assert image_saved == pytest.approx(traffic.image_hits * IMAGE_COST_USD, abs=1e-5 * traffic.image_hits)
    assert saved == pytest.approx(traffic.saved_micro / 1e6, abs=1e-9)
    assert spent == pytest.approx(traffic.spent_micro / 1e6, abs=1e-9)
    # increase() sees only growth between scrapes (round 2) and extrapolates: positive, bounded.
    assert 0 < panel <= saved * 1.5


@LIVE
async def test_request_counts_and_hit_ratio_match_what_was_sent(live: LiveRun) -> None:
    """requests_total and cache results equal the client's tally; every hit ratio is in (0, 1)."""
    traffic, prom, at = live.traffic, live.prom, live.at
    by_cache = {
        sample["metric"]["cache"]: float(sample["value"][1])
        for sample in await prom.query("sum by (cache) (llm_proxy_requests_total)", at)
    }
    ratios = [
        float(sample["value"][1])
        for title, expr in panel_expressions(json.loads(DASHBOARD.read_text()))
        if "hit ratio" in title.lower()
        for sample in await prom.query(expr, at)
    ]
    assert await prom.value("sum(llm_proxy_requests_total)", at) == traffic.requests
    assert by_cache == {cache.lower(): float(n) for cache, n in traffic.results.items()}
    assert await prom.value('sum(llm_proxy_upstream_errors_total{kind="status_5xx"})', at) == 2
    # Priced once per miss and once per hit, in each round.
    assert await prom.value(f'sum(llm_proxy_unknown_model_total{{model="{UNKNOWN_MODEL}"}})', at) == 4
    assert await prom.value(f'min_over_time(up{{job="{JOB}"}}[10m])', at) == 1  # no failed scrape
    assert ratios
    assert all(0 < ratio < 1 for ratio in ratios), ratios
    # Non-streamed image hits are ~2 MB each: they must count in bytes served, not only streams.
    hit_bytes = await prom.value('sum(llm_proxy_bytes_served_total{cache="hit"})', at)
    assert hit_bytes >= traffic.image_hits * 1_500_000


def test_proxy_metrics_agree_with_the_tally(live: LiveRun) -> None:
    """The proxy's own /metrics, read directly, counts the same requests as the client sent."""
    lines = [line for line in live.metrics_text.splitlines() if line.startswith("llm_proxy_requests_total")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in lines) == live.traffic.requests


async def test_every_dashboard_metric_is_declared_by_the_proxy(proxy: ProxyServer) -> None:
    """Each metric name a panel uses is declared in /metrics (histogram series via their family)."""
    async with aiohttp.ClientSession() as session, session.get(f"{proxy.base}/metrics") as response:
        text = await response.text()
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            declared.add(name)
            if kind == "histogram":
                declared |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    used = set(re.findall(r"llm_proxy_\w+", DASHBOARD.read_text()))
    assert used, "the dashboard uses no llm_proxy_ metric"
    assert not used - declared, sorted(used - declared)
