"""Budgets end to end: concurrent overspend is impossible, 429s are exact, hits are free, periods reset."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import openai
import orjson
import pytest
from prometheus_client import CollectorRegistry

from proxy.budget.guard import BudgetGuard
from proxy.budget.memory import MemoryBudgetLedger
from proxy.budget.plan import plan_reservation
from proxy.endpoints.chat import chat_demand
from proxy.errors import ProxyError
from proxy.keys.store import ManagedKey
from proxy.obs.accounting import Accountant
from proxy.obs.metrics import ProxyMetrics
from proxy.obs.pricing import DEFAULT_PRICES, PriceTable
from tests.e2e_helpers import IMAGE_MODEL, TEXT_MODEL, async_client, chat_body, chat_raw, user
from tests.fake_upstream import FakeUpstream
from tests.managed_helpers import (
    admin,
    create_key,
    key_status,
    managed_proxy,
    metric_value,
    metrics_text,
)

CONCURRENT = 50
FITS = 10
ONE_IMAGE_TOKENS = 1300  # the client's own bound: one image (1,290 tokens) and a little text


def _image_bodies() -> list[bytes]:
    # Different prompts: single flight must not coalesce them, each needs its own upstream call.
    return [
        orjson.dumps(
            chat_body(f"a watercolour lighthouse, variant {i:03d}", IMAGE_MODEL, max_tokens=ONE_IMAGE_TOKENS)
        )
        for i in range(CONCURRENT)
    ]


def _reservation(raw: bytes) -> int:
    """What the proxy reserves for a body that sets its own max_tokens (fixed, no grant range)."""
    plan = plan_reservation(DEFAULT_PRICES[IMAGE_MODEL], chat_demand(raw, orjson.loads(raw)), budgeted=True)
    assert plan.grant is not None
    assert plan.grant.floor == plan.grant.cap == ONE_IMAGE_TOKENS
    return plan.fixed_micro + plan.grant.cost(plan.grant.cap)


async def test_fifty_concurrent_image_requests_cannot_overspend(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """50 concurrent image requests (own max_tokens) on a budget for 10: at most 10 go upstream."""
    fake_upstream.state.image_bytes = 20_000
    fake_upstream.state.image_latency_s = 0.2
    bodies = _image_bodies()
    estimate = max(_reservation(raw) for raw in bodies)
    budget_micro = FITS * estimate + estimate // 2
    # 50 key lookups and reservations open their Redis connections at once; on a loaded CI
    # machine that burst can pass the default 1 s op bound (a 503, not an overspend). This test
    # pins the budget, so it gives Redis room: store_timeout 2 s, op bound 8 s.
    async with managed_proxy(fake_upstream, redis_url, key_prefix, store_timeout=2.0) as proxy:
        key, secret = await create_key(proxy, budget_usd=budget_micro / 1_000_000, period="month")
        replies = await asyncio.gather(*(chat_raw(proxy, raw, api_key=secret) for raw in bodies))
        status = await key_status(proxy, key["id"])
    ok = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status == 429]
    assert len(ok) + len(refused) == CONCURRENT
    assert fake_upstream.chat_calls == len(ok) <= FITS
    assert len(ok) >= FITS - 1  # the budget is not refused early either
    assert all(r.json()["error"]["code"] == "budget_exceeded" for r in refused)
    assert status["reserved_usd"] == 0
    assert status["spend_micro_usd"] <= budget_micro
    print(
        f"\n{len(ok)} of {CONCURRENT} reached upstream; settled {status['spend_micro_usd']} micro-USD "
        f"of a {budget_micro} budget (estimate {estimate} per request)"
    )


async def test_budget_refusal_body_headers_and_sdk_does_not_retry(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Over budget: exact 429 body and headers, and the openai SDK raises RateLimitError once."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        key, secret = await create_key(proxy, budget_usd=0.00001, period="day")
        reply = await chat_raw(proxy, chat_body("hello"), api_key=secret)
        assert reply.status == 429
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"], error["param"]) == (
            "insufficient_quota",
            "budget_exceeded",
            None,
        )
        now = datetime.now(UTC)
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp() + 86400
        assert "spent 0.000000 of 0.000010 USD" in error["message"]
        assert f"resets at {datetime.fromtimestamp(midnight, UTC).isoformat()}" in error["message"]
        assert reply.headers["x-should-retry"] == "false"
        assert abs(int(reply.headers["Retry-After"]) - (midnight - time.time())) <= 2
        client = openai.AsyncOpenAI(base_url=proxy.url, api_key=secret, max_retries=3, timeout=30)
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(model=TEXT_MODEL, messages=user("hello"))
        await client.close()
        assert time.monotonic() - started < 0.5  # no backoff: no retry happened
        assert raised.value.code == "budget_exceeded"
        text = await metrics_text(proxy)
    assert metric_value(text, "llm_proxy_budget_rejections_total", key="team-a") == 2
    assert fake_upstream.chat_calls == 0
    assert key["budget_usd"] == 0.00001


async def test_cache_hits_are_free_unless_configured(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A hit costs the key nothing (and is served even over budget); savings are reported."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        key, secret = await create_key(proxy, budget_usd=1)
        first = await chat_raw(proxy, chat_body("cache me"), api_key=secret)
        spent = (await key_status(proxy, key["id"]))["spend_micro_usd"]
        assert spent > 0
        await admin(proxy, "PATCH", f"/keys/{key['id']}", {"budget_usd": spent / 1_000_000})
        second = await chat_raw(proxy, chat_body("cache me"), api_key=secret)
        status = await key_status(proxy, key["id"])
        blocked = await chat_raw(proxy, chat_body("new question"), api_key=secret)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second.body == first.body
    assert status["spend_micro_usd"] == spent
    assert status["cache_hits"] == 1
    assert status["cache_savings_usd"] == spent / 1_000_000
    assert blocked.status == 429
    assert fake_upstream.chat_calls == 1


async def test_charged_hits_count_against_the_budget(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """With charge_cache_hits a hit is charged what it would have cost upstream."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix, charge_cache_hits=True) as proxy:
        key, secret = await create_key(proxy, budget_usd=1)
        await chat_raw(proxy, chat_body("cache me"), api_key=secret)
        once = (await key_status(proxy, key["id"]))["spend_micro_usd"]
        hit = await chat_raw(proxy, chat_body("cache me"), api_key=secret)
        twice = (await key_status(proxy, key["id"]))["spend_micro_usd"]
    assert hit.headers["X-Cache"] == "HIT"
    assert twice == 2 * once


async def test_stream_and_upstream_errors_settle(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """A stream settles to its usage; an upstream error releases the reservation (no spend)."""
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        key, secret = await create_key(proxy, budget_usd=1)
        fake_upstream.state.fail_next.append((500, {"error": {"message": "boom", "type": "server_error"}}))
        failed = await chat_raw(proxy, chat_body("fails"), api_key=secret)
        after_error = await key_status(proxy, key["id"])
        client = async_client(proxy, secret)
        stream = await client.chat.completions.create(
            model=TEXT_MODEL, messages=user("stream me"), stream=True
        )
        chunks = [chunk async for chunk in stream]
        await client.close()
        after_stream = await key_status(proxy, key["id"])
        usage = await admin(proxy, "GET", f"/keys/{key['id']}/usage")
    assert failed.status == 500
    assert (after_error["spend_micro_usd"], after_error["reserved_usd"]) == (0, 0)
    assert chunks
    assert all(chunk.usage is None for chunk in chunks)  # the usage we asked for is stripped again
    assert after_stream["spend_micro_usd"] > 0
    assert after_stream["reserved_usd"] == 0
    summary = usage.json()
    assert summary["cost_micro_usd"] == after_stream["spend_micro_usd"]
    assert summary["by_model"][TEXT_MODEL]["completion_tokens"] > 0


async def test_admin_reset_reopens_the_budget(
    fake_upstream: FakeUpstream, redis_url: str, key_prefix: str
) -> None:
    """Resetting spend through the admin API lets an exhausted key through again."""
    fake_upstream.state.image_bytes = 20_000
    async with managed_proxy(fake_upstream, redis_url, key_prefix) as proxy:
        # One image (about 0.0387 USD, reserved as 1,546 tokens: 0.0464 USD) fits, a second does not.
        key, secret = await create_key(proxy, budget_usd=0.05, period="total")
        first = await chat_raw(proxy, chat_body("one", IMAGE_MODEL), api_key=secret)
        refused = await chat_raw(proxy, chat_body("two", IMAGE_MODEL), api_key=secret)
        reset = await admin(proxy, "POST", f"/keys/{key['id']}/reset")
        again = await chat_raw(proxy, chat_body("two", IMAGE_MODEL), api_key=secret)
    assert (first.status, refused.status, again.status) == (200, 429, 200)
    assert "Retry-After" not in refused.headers  # a total budget never resets by itself
    assert "resets at never" in refused.json()["error"]["message"]
    assert reset.json()["spend_usd"] == 0


@dataclass
class _Clock:
    now: float

    def __call__(self) -> float:
        return self.now


async def test_day_budget_resets_at_utc_midnight() -> None:
    """A key refused late in the day is admitted again once the UTC day changes."""
    clock = _Clock(datetime(2026, 3, 14, 23, 59, 30, tzinfo=UTC).timestamp())
    metrics = ProxyMetrics(CollectorRegistry())
    guard = BudgetGuard(
        MemoryBudgetLedger(clock),
        Accountant(PriceTable(), metrics),
        metrics,
        timeout=1.0,
        reservation_ttl_s=900,
        fail_closed=True,
        charge_hits=False,
        clock=clock,
    )
    key = ManagedKey("k1", "daily", 50_000, "day", (), None, None, True, datetime.now(UTC))
    body = chat_body("draw", IMAGE_MODEL)
    raw = orjson.dumps(body)
    reservation = (await guard.reserve(key, IMAGE_MODEL, chat_demand(raw, body))).reservation
    await guard.settle(
        key, reservation, model=IMAGE_MODEL, usage=None, cost_micro=40_000, billed_unknown=False
    )
    with pytest.raises(ProxyError) as refused:
        await guard.reserve(key, IMAGE_MODEL, chat_demand(raw, body))
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "30"
    clock.now += 31
    assert (await guard.reserve(key, IMAGE_MODEL, chat_demand(raw, body))).reservation is not None
