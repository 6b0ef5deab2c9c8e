"""The dashboard's per-key row, evaluated by a real Prometheus against a proxy with a managed key.

The main live test runs pass-through traffic, where the per-key panels can only show their
fallback; here a key with a budget spends, hits the cache and is refused, and every per-key panel
must show that key with the right numbers.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from tests.dashboard_exprs import panel_expressions
from tests.e2e_helpers import IMAGE_MODEL, chat_body, chat_raw
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import create_key, key_status, managed_proxy
from tests.prometheus_server import PrometheusServer

DASHBOARD = Path(__file__).resolve().parents[1] / "grafana" / "dashboards" / "llm-proxy.json"
PER_KEY_PANELS = (
    "Budget used by key",
    "Spend vs budget by key",
    "Key spend USD per hour",
    "Budget rejections",
)

pytestmark = pytest.mark.timeout(90)


async def test_per_key_panels_show_spend_against_budget(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """Spend, budget, remaining and rejections of a managed key reach every per-key panel, exactly."""
    fake_upstream.state.image_bytes = 50_000
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        key, secret = await create_key(proxy, alias="team-a", budget_usd=0.1, period="month")
        async with PrometheusServer(tmp_path, f"127.0.0.1:{proxy.port}") as prom:
            await prom.wait_for_scrapes(time.time() - 60, 1)
            statuses = []
            for prompt in ("a fox", "a fox", "an owl", "a whale", "a crab"):  # 2nd is a hit
                reply = await chat_raw(proxy, chat_body(prompt, IMAGE_MODEL), api_key=secret)
                statuses.append((reply.status, reply.headers.get("X-Cache")))
            status = await key_status(proxy, key["id"])
            at = await prom.wait_for_scrapes(time.time(), 3)
            spend = await prom.value('llm_proxy_key_spend_usd_total{key="team-a"}', at)
            budget = await prom.value('llm_proxy_key_budget_usd{key="team-a"}', at)
            remaining = await prom.value('llm_proxy_key_budget_remaining_usd{key="team-a"}', at)
            rejected = await prom.value('llm_proxy_budget_rejections_total{key="team-a"}', at)
            panels = [
                (title, expr)
                for title, expr in panel_expressions(json.loads(DASHBOARD.read_text()))
                if title in PER_KEY_PANELS
            ]
            results = {expr: await prom.query(expr, at) for _, expr in panels}
    # $0.10 fits two images (~$0.0387 each) but not a third reservation: hit free, then refusals.
    assert statuses[:3] == [(200, "MISS"), (200, "HIT"), (200, "MISS")], statuses
    assert [s for s, _ in statuses[3:]] == [429, 429], statuses
    assert spend == pytest.approx(status["spend_micro_usd"] / 1e6, abs=1e-9)
    assert spend == pytest.approx(2 * 0.0387, abs=1e-4)
    assert budget == pytest.approx(0.1)
    assert remaining == pytest.approx(0.1 - spend, abs=1e-9)
    assert rejected == 2
    assert {title for title, _ in panels} == set(PER_KEY_PANELS)
    for title, expr in panels:
        samples = results[expr]
        keys = {sample["metric"].get("key") for sample in samples}
        assert "team-a" in keys, f"{title!r} does not show the key: {expr} -> {samples}"
        assert all(math.isfinite(float(sample["value"][1])) for sample in samples), (title, samples)
