"""Completion grants: the reserve step sizes the bound atomically, identically in Lua and in memory."""

from __future__ import annotations

import uuid
from fractions import Fraction

import orjson
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.budget.memory import MemoryBudgetLedger
from proxy.budget.plan import LUA_EXACT_LIMIT, unit_price
from proxy.budget.redis import RedisBudgetLedger
from proxy.budget.types import CompletionGrant, Reservation
from proxy.obs.model_price import ModelPrice

units = st.integers(min_value=0, max_value=200_000)


@st.composite
def grants(draw: st.DrawFn) -> CompletionGrant:
    """A valid grant: floor <= cap, a unit price that keeps Lua's products exact."""
    cap = draw(st.integers(min_value=1, max_value=200_000))
    floor = draw(st.integers(min_value=0, max_value=cap))
    unit = draw(st.fractions(min_value=0, max_value=200, max_denominator=100_000))
    price = ModelPrice(Fraction(0), unit)
    num, den, cap = unit_price(price, draw(st.integers(1, 16)), cap)
    return CompletionGrant(min(floor, cap), cap, num, den)


@given(grant=grants(), available=st.integers(min_value=-(10**7), max_value=10**12))
def test_grant_is_the_most_the_budget_covers_within_floor_and_cap(
    grant: CompletionGrant, available: int
) -> None:
    """Units stay in [floor, cap]; above the floor they fit `available` and one more would not."""
    granted = grant.units_for(available)
    assert grant.floor <= granted <= grant.cap
    if granted > grant.floor:
        assert grant.cost(granted) <= available
    if available >= grant.cost(grant.floor) and granted < grant.cap:
        assert grant.cost(granted) <= available < grant.cost(granted + 1)


@given(unit=st.fractions(min_value=0, max_value=10**6, max_denominator=10**9), n=st.integers(1, 128))
def test_unit_price_is_exact_or_rounded_up_and_lua_safe(unit: Fraction, n: int) -> None:
    """The coarsened unit price never undercharges and keeps cap * num + den below 2**52."""
    cap = 128_000
    num, den, capped = unit_price(ModelPrice(Fraction(0), unit), n, cap)
    assert Fraction(num, den) >= unit * n
    assert capped * num + den < LUA_EXACT_LIMIT
    assert capped == cap or unit * n > 10**6


def test_grant_cost_rounds_up() -> None:
    """0.6 micro-USD per token: 1 token reserves 1 micro-USD, 5 tokens exactly 3."""
    grant = CompletionGrant(1, 10, 3, 5)
    assert (grant.cost(1), grant.cost(5), grant.cost(0)) == (1, 3, 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    grant=grants(),
    budget=st.integers(min_value=0, max_value=10**9),
    spent=st.integers(min_value=0, max_value=10**8),
    fixed=st.integers(min_value=0, max_value=10**6),
)
async def test_lua_and_memory_ledgers_grant_the_same(
    redis_url: str, grant: CompletionGrant, budget: int, spent: int, fixed: int
) -> None:
    """For any standing, both ledgers admit or refuse alike and grant the same units and estimate."""
    prefix = f"lcptest-grant-{uuid.uuid4().hex[:10]}"
    client = aioredis.Redis.from_url(redis_url)
    try:
        outcomes = []
        for ledger in (MemoryBudgetLedger(), RedisBudgetLedger(client, prefix)):
            if spent:
                await ledger.charge(
                    "k", "total", spent, model="m", prompt_tokens=0, completion_tokens=0, cache_result=""
                )
            result = await ledger.reserve("k", budget, "total", fixed, model="m", grant=grant)
            if isinstance(result, Reservation):
                outcomes.append(("granted", result.granted_units, result.estimate_micro))
            else:
                outcomes.append(("refused", 0, result.estimate_micro))
        assert outcomes[0] == outcomes[1]
        if outcomes[0][0] == "granted":
            assert spent + outcomes[0][2] <= budget
    finally:
        doomed = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if doomed:
            await client.delete(*doomed)
        await client.aclose()


async def test_redis_record_holds_the_granted_estimate(redis_client: aioredis.Redis, key_prefix: str) -> None:
    """The reservation record stores the sized estimate, so a crash turns exactly that into spend."""
    ledger = RedisBudgetLedger(redis_client, key_prefix)
    grant = CompletionGrant(1000, 16_384, 3, 5)  # gpt-4o-mini output: 0.6 micro-USD per token
    result = await ledger.reserve("k", 5_000, "total", 100, model="gpt-4o-mini", grant=grant)
    assert isinstance(result, Reservation)
    assert result.granted_units == (5_000 - 100) * 5 // 3  # 8,166 tokens fit, not the 16,384 cap
    assert result.estimate_micro == 100 + -(-result.granted_units * 3 // 5)
    record = orjson.loads(await redis_client.hget(f"{key_prefix}:budget:{{k}}:resvdata", result.id))
    assert int(record["a"]) == result.estimate_micro
    status = await ledger.status("k", 5_000, "total")
    assert status.reserved_micro == result.estimate_micro


async def test_floor_that_does_not_fit_is_refused_with_its_cost() -> None:
    """When even the floor does not fit, the refusal says what the floor would have cost."""
    ledger = MemoryBudgetLedger()
    grant = CompletionGrant(1000, 16_384, 3, 5)
    result = await ledger.reserve("k", 500, "total", 10, model="m", grant=grant)
    assert not isinstance(result, Reservation)
    assert result.estimate_micro == 10 + 600
