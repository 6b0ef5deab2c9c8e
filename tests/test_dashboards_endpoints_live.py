"""The dashboard's per-endpoint row, evaluated by a real Prometheus scraping a real proxy.

Chat, embeddings, the Images API and the model list each get a MISS and a HIT per round, two
rounds; the row repeated over ``$endpoint`` is then filled in for each endpoint as Grafana would
and every query must show data: the hit ratio of each endpoint is one half, spend and savings are
the endpoint's own, and the endpoints add up to the totals the rest of the dashboard shows.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import redis

from tests.dashboard_exprs import endpoint_expressions
from tests.e2e_helpers import TEXT_MODEL, chat_body, send_raw
from tests.fake_upstream import FakeUpstream
from tests.images_helpers import GPT_IMAGE, SMALL_PNG
from tests.prometheus_server import PrometheusServer
from tests.proxy_harness import ProxyServer, proxy_settings

DASHBOARD = Path(__file__).resolve().parents[1] / "grafana" / "dashboards" / "llm-proxy.json"
PRICED = ("chat.completions", "embeddings", "images.generations")
ENDPOINTS = (*PRICED, "models")
MODELS_TTL = 2

LIVE = pytest.mark.asyncio(loop_scope="module")
pytestmark = pytest.mark.timeout(90)


@dataclass(frozen=True, slots=True)
class EndpointRun:
    """Prometheus after the traffic, and the moment every query is evaluated at."""

    prom: PrometheusServer
    at: float


async def _pair(proxy: ProxyServer, path: str, body: dict[str, object] | None) -> list[str]:
    """The same request twice; the X-Cache of each answer."""
    method = "GET" if body is None else "POST"
    results = []
    for _ in range(2):
        reply = await send_raw(f"{proxy.url}{path}", body, method=method)
        assert reply.status == 200, (path, reply.body[:300])
        results.append(reply.headers["X-Cache"])
    return results


async def _round(proxy: ProxyServer, phase: int) -> None:
    """A MISS then a HIT on each endpoint (the model list's entry expires between rounds)."""
    calls = {
        "/chat/completions": chat_body(f"hello, round {phase}", TEXT_MODEL),
        # Long enough to cost whole micro-dollars at $0.02 per million tokens.
        "/embeddings": {"model": "text-embedding-3-small", "input": [f"round {phase} " + "word " * 3000]},
        "/images/generations": {"model": GPT_IMAGE, "prompt": f"a fox, round {phase}"},
        "/models": None,
    }
    for path, body in calls.items():
        assert await _pair(proxy, path, body) == ["MISS", "HIT"], path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EndpointRun]:
    """Two rounds of traffic on every endpoint, scraped by Prometheus before, between and after."""
    prefix = f"lcptest-{uuid.uuid4().hex[:12]}"
    async with (
        FakeUpstream() as upstream,
        ProxyServer(proxy_settings(upstream.url, redis_url, prefix, models_ttl=MODELS_TTL)) as proxy,
        PrometheusServer(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{proxy.port}") as prom,
    ):
        upstream.state.image_bytes = SMALL_PNG
        await prom.wait_for_scrapes(time.time() - 60, 1)
        await _round(proxy, 1)
        await prom.wait_for_scrapes(time.time(), 1)
        await asyncio.sleep(MODELS_TTL + 0.1)  # round 2 finds the model list expired: a MISS again
        await _round(proxy, 2)
        at = await prom.wait_for_scrapes(time.time(), 3)
        yield EndpointRun(prom, at)
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@LIVE
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_every_panel_of_the_endpoint_row_shows_data(run: EndpointRun, endpoint: str) -> None:
    """Each query of the row, filled in for one endpoint, yields finite samples; its hit ratio is 1/2."""
    exprs = endpoint_expressions(json.loads(DASHBOARD.read_text()), endpoint)
    assert len(exprs) == 4
    for title, expr in exprs:
        samples = await run.prom.query(expr, run.at)
        values = [float(sample["value"][1]) for sample in samples]
        assert values, f"{title}: {expr}"
        assert all(math.isfinite(v) for v in values), f"{title}: {values}"
        if "hit ratio" in title.lower():
            assert values == [pytest.approx(0.5, abs=0.01)], title


@LIVE
async def test_each_endpoint_counts_its_own_requests_spend_and_savings(run: EndpointRun) -> None:
    """requests_total per endpoint is what was sent; a hit saved what its miss cost, per endpoint;
    the model list costs nothing; the endpoints add up to the totals."""
    prom, at = run.prom, run.at
    for endpoint in ENDPOINTS:
        assert await prom.value(f'sum(llm_proxy_requests_total{{endpoint="{endpoint}"}})', at) == 4
        lookups = await prom.value(f'sum(llm_proxy_cache_results_total{{endpoint="{endpoint}"}})', at)
        assert lookups == 4, endpoint
    for endpoint in PRICED:
        spent = await prom.value(f'sum(llm_proxy_cost_usd_total{{endpoint="{endpoint}"}})', at)
        saved = await prom.value(f'sum(llm_proxy_cost_saved_usd_total{{endpoint="{endpoint}"}})', at)
        assert spent > 0, endpoint
        assert saved == pytest.approx(spent, rel=1e-9), endpoint
    assert await prom.query('llm_proxy_cost_usd_total{endpoint="models"}', at) == []
    total = await prom.value("sum(llm_proxy_cost_usd_total)", at)
    by_endpoint = await prom.query("sum by (endpoint) (llm_proxy_cost_usd_total)", at)
    assert {s["metric"]["endpoint"] for s in by_endpoint} == set(PRICED)
    assert sum(float(s["value"][1]) for s in by_endpoint) == pytest.approx(total, rel=1e-9)
