"""Budget periods, reserve-then-settle ledgers (Redis and in-memory) and the RPM limiter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from proxy.budget.memory import MemoryBudgetLedger
from proxy.budget.redis import RedisBudgetLedger
from proxy.budget.types import BudgetLedger, BudgetRefusal, Reservation
from proxy.keys.periods import PERIODS, Period, period_window, spend_ttl_s

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
MOMENTS = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@given(period=st.sampled_from(PERIODS), now=MOMENTS)
def test_window_contains_now_and_resets_on_a_utc_boundary(period: Period, now: datetime) -> None:
    """The reset is after now, at UTC midnight, within one period, and the id holds until then."""
    period_id, resets_at = period_window(period, now)
    if period == "total":
        assert (period_id, resets_at) == ("total", None)
        return
    assert resets_at is not None
    assert resets_at > now
    assert resets_at - now <= timedelta(days=31)
    assert (resets_at.hour, resets_at.minute, resets_at.second) == (0, 0, 0)
    assert resets_at.utcoffset() == timedelta(0)
    if period == "month":
        assert resets_at.day == 1
    assert period_window(period, resets_at - timedelta(microseconds=1))[0] == period_id
    assert period_window(period, resets_at)[0] != period_id


@given(a=MOMENTS, b=MOMENTS)
def test_day_ids_equal_exactly_when_the_utc_date_is_equal(a: datetime, b: datetime) -> None:
    """Two moments share a day window iff they share a UTC calendar date."""
    assert (period_window("day", a)[0] == period_window("day", b)[0]) == (a.date() == b.date())


def test_period_ids_and_offsets() -> None:
    """Ids have the documented shape and non-UTC inputs are converted before bucketing."""
    late = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert period_window("day", late) == ("d2026-12-31", datetime(2027, 1, 1, tzinfo=UTC))
    assert period_window("month", late) == ("m2026-12", datetime(2027, 1, 1, tzinfo=UTC))
    plus_two = datetime(2026, 12, 1, 1, 0, tzinfo=UTC) - timedelta(hours=2)
    assert period_window("month", plus_two.astimezone())[0] == "m2026-11"
    assert [spend_ttl_s(p) for p in PERIODS] == [2 * 86400, 40 * 86400, None]


@dataclass
class Clock:
    """A hand-moved clock so tests can cross expiry and period boundaries instantly."""

    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    ledger: BudgetLedger
    clock: Clock


@pytest.fixture(params=["redis", "memory"])
async def rig(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis, key_prefix: str
) -> AsyncIterator[Rig]:
    """The same tests run against the Redis ledger and the in-memory one."""
    clock = Clock()
    if request.param == "redis":
        yield Rig(RedisBudgetLedger(redis_client, key_prefix, clock=clock), clock)
    else:
        yield Rig(MemoryBudgetLedger(clock=clock), clock)


async def _reserve(
    rig: Rig, budget: int | None, estimate: int, ttl: int = 900, model: str = ""
) -> Reservation:
    got = await rig.ledger.reserve("k1", budget, "day", estimate, ttl, model=model)
    assert isinstance(got, Reservation), got
    return got


async def _settle(rig: Rig, res: Reservation, actual: int, model: str = "m") -> bool:
    return await rig.ledger.settle(
        res, actual, model=model, prompt_tokens=10, completion_tokens=5, cache_result="MISS"
    )


async def test_reserve_then_settle_arithmetic(rig: Rig) -> None:
    """A reservation holds its estimate; settling swaps it for the actual cost."""
    res = await _reserve(rig, 1000, 300)
    status = await rig.ledger.status("k1", 1000, "day")
    assert (status.spent_micro, status.reserved_micro, status.remaining_micro) == (0, 300, 700)
    assert (status.period_id, status.requests) == ("d2026-11-25", 1)
    assert status.resets_at == datetime(2026, 11, 26, tzinfo=UTC)
    assert await _settle(rig, res, 120)
    status = await rig.ledger.status("k1", 1000, "day")
    assert (status.spent_micro, status.reserved_micro, status.remaining_micro) == (120, 0, 880)


async def test_refusal_reports_standing_and_reset(rig: Rig) -> None:
    """An estimate that does not fit is refused with spend, reservations, budget and reset."""
    await rig.ledger.charge(
        "k1", "day", 600, model="m", prompt_tokens=0, completion_tokens=0, cache_result="MISS"
    )
    await _reserve(rig, 1000, 300)
    refusal = await rig.ledger.reserve("k1", 1000, "day", 200)
    assert isinstance(refusal, BudgetRefusal)
    assert (refusal.spent_micro, refusal.reserved_micro, refusal.budget_micro) == (600, 300, 1000)
    assert refusal.resets_at == datetime(2026, 11, 26, tzinfo=UTC)
    assert refusal.retry_after_s(datetime.fromtimestamp(T0, UTC)) == 12 * 3600
    assert isinstance(await rig.ledger.reserve("k1", 1000, "day", 100), Reservation)


async def test_exhausted_budget_refuses_even_a_zero_estimate(rig: Rig) -> None:
    """Once nothing remains, nothing more is admitted; a zero budget admits nothing."""
    assert isinstance(await rig.ledger.reserve("k1", 0, "day", 0), BudgetRefusal)
    res = await _reserve(rig, 100, 100)
    await _settle(rig, res, 100)
    assert isinstance(await rig.ledger.reserve("k1", 100, "day", 0), BudgetRefusal)


async def test_unlimited_budget_still_accounts_spend(rig: Rig) -> None:
    """budget None never refuses but spend is recorded and remaining is None."""
    res = await _reserve(rig, None, 10**12)
    await _settle(rig, res, 7)
    status = await rig.ledger.status("k1", None, "day")
    assert (status.spent_micro, status.remaining_micro) == (7, None)


async def test_large_amounts_stay_exact(rig: Rig) -> None:
    """Micro-USD beyond double-formatting range (1e15+) round-trip without loss."""
    res = await _reserve(rig, None, 123_456_789_012_345_678)
    await _settle(rig, res, 987_654_321_098_765)
    status = await rig.ledger.status("k1", None, "day")
    assert status.spent_micro == 987_654_321_098_765


async def test_concurrent_reserves_never_overspend(rig: Rig) -> None:
    """50 simultaneous reservations against room for 10 grant exactly 10."""
    results = await asyncio.gather(*(rig.ledger.reserve("k1", 1000, "day", 100) for _ in range(50)))
    assert sum(isinstance(r, Reservation) for r in results) == 10
    status = await rig.ledger.status("k1", 1000, "day")
    assert (status.reserved_micro, status.remaining_micro, status.requests) == (1000, 0, 10)


async def test_crashed_reservation_becomes_spend(rig: Rig) -> None:
    """A reservation never settled is charged as spend once its ttl passes, not dropped."""
    res = await _reserve(rig, 1000, 400, ttl=60, model="img")
    rig.clock.now += 61
    status = await rig.ledger.status("k1", 1000, "day")
    assert (status.spent_micro, status.reserved_micro, status.remaining_micro) == (400, 0, 600)
    usage = await rig.ledger.usage("k1")
    assert (usage.micro_usd, usage.requests, usage.by_model[0].model) == (400, 1, "img")
    # A settle arriving after the conversion charges the difference, once.
    assert await _settle(rig, res, 250)
    assert not await _settle(rig, res, 250)
    assert (await rig.ledger.status("k1", 1000, "day")).spent_micro == 250
    usage = await rig.ledger.usage("k1")
    assert (usage.micro_usd, usage.requests, usage.prompt_tokens) == (250, 1, 10)


async def test_settle_is_idempotent(rig: Rig) -> None:
    """Settling or releasing a reservation twice charges it once."""
    res = await _reserve(rig, 1000, 300)
    assert await _settle(rig, res, 200)
    assert not await _settle(rig, res, 200)
    assert not await rig.ledger.release(res)
    other = await _reserve(rig, 1000, 300)
    assert await rig.ledger.release(other)
    assert not await _settle(rig, other, 50)
    status = await rig.ledger.status("k1", 1000, "day")
    assert (status.spent_micro, status.reserved_micro) == (200, 0)
    assert (await rig.ledger.usage("k1")).requests == 2


async def test_period_rollover_charges_the_reserved_period(rig: Rig) -> None:
    """A new day starts empty; a settle after midnight charges the day it was reserved in."""
    rig.clock.now = datetime(2026, 11, 25, 23, 59, 30, tzinfo=UTC).timestamp()
    res = await _reserve(rig, 1000, 900)
    rig.clock.now += 60
    fresh = await rig.ledger.status("k1", 1000, "day")
    assert (fresh.period_id, fresh.spent_micro, fresh.reserved_micro) == ("d2026-11-26", 0, 0)
    assert isinstance(await rig.ledger.reserve("k1", 1000, "day", 900), Reservation)
    await _settle(rig, res, 800)
    assert (await rig.ledger.status("k1", 1000, "day")).spent_micro == 0
    rig.clock.now -= 60
    old = await rig.ledger.status("k1", 1000, "day")
    assert (old.period_id, old.spent_micro, old.reserved_micro) == ("d2026-11-25", 800, 0)


async def test_reset_zeroes_spend_but_keeps_reservations(rig: Rig) -> None:
    """Reset clears the period's spend; in-flight reservations still count and settle."""
    done = await _reserve(rig, 1000, 500)
    await _settle(rig, done, 500)
    pending = await _reserve(rig, 1000, 300)
    await rig.ledger.reset("k1", "day")
    status = await rig.ledger.status("k1", 1000, "day")
    assert (status.spent_micro, status.reserved_micro, status.requests) == (0, 300, 0)
    await _settle(rig, pending, 100)
    assert (await rig.ledger.status("k1", 1000, "day")).spent_micro == 100


async def test_usage_summarises_the_ledger(rig: Rig) -> None:
    """Usage totals requests, tokens, cost, cache hits and savings per model and overall."""
    for model, actual in (("a", 100), ("b", 30), ("a", 50)):
        await _settle(rig, await _reserve(rig, None, 200), actual, model)
    await rig.ledger.charge(
        "k1",
        "day",
        0,
        model="a",
        prompt_tokens=10,
        completion_tokens=5,
        cache_result="HIT",
        saved_micro=100,
    )
    usage = await rig.ledger.usage("k1")
    assert (usage.requests, usage.micro_usd, usage.cache_hits, usage.saved_micro) == (
        4,
        180,
        1,
        100,
    )
    assert (usage.prompt_tokens, usage.completion_tokens, usage.truncated) == (40, 20, False)
    by_model = {m.model: m for m in usage.by_model}
    assert (by_model["a"].requests, by_model["a"].micro_usd, by_model["a"].cache_hits) == (
        3,
        150,
        1,
    )
    assert (by_model["b"].requests, by_model["b"].micro_usd) == (1, 30)
    assert (await rig.ledger.usage("k1", limit=2)).truncated
    assert (await rig.ledger.usage("nobody")).requests == 0


async def test_usage_since_skips_older_rows(rig: Rig) -> None:
    """Rows written before `since` are left out of the summary."""
    await _settle(rig, await _reserve(rig, None, 10), 10, "old")
    rig.clock.now += 3600
    await _settle(rig, await _reserve(rig, None, 10), 7, "new")
    since = datetime.fromtimestamp(T0 + 1800, UTC)
    usage = await rig.ledger.usage("k1", since=since)
    assert ([m.model for m in usage.by_model], usage.micro_usd) == (["new"], 7)


async def test_rate_limit_counts_a_sliding_minute(rig: Rig) -> None:
    """rpm requests pass, the next is refused, and capacity returns as the window slides."""
    assert [await rig.ledger.allow_request("k1", 3) for _ in range(4)] == [True] * 3 + [False]
    assert await rig.ledger.allow_request("k2", 3)
    rig.clock.now += 60
    assert not await rig.ledger.allow_request("k1", 3)
    rig.clock.now += 50
    assert await rig.ledger.allow_request("k1", 3)
    rig.clock.now += 120
    assert [await rig.ledger.allow_request("k1", 3) for _ in range(4)] == [True] * 3 + [False]


async def test_redis_keys_share_a_hash_tag_and_expire(redis_client: aioredis.Redis, key_prefix: str) -> None:
    """Every key sits under the prefix with the key id as hash tag; spend keys carry a ttl."""
    ledger = RedisBudgetLedger(redis_client, key_prefix, clock=Clock(), ledger_maxlen=5)
    for period in PERIODS:
        res = await ledger.reserve("k1", None, period, 10)
        assert isinstance(res, Reservation)
        await ledger.settle(res, 5, model="m", prompt_tokens=1, completion_tokens=1, cache_result="MISS")
    keys = [k.decode() async for k in redis_client.scan_iter(match=f"{key_prefix}*", count=1000)]
    assert keys
    assert all(k.startswith(f"{key_prefix}:budget:{{k1}}:") for k in keys)
    ttls = {k.rsplit(":", 1)[1]: await redis_client.ttl(k) for k in keys if ":p:" in k}
    assert 86400 < ttls["d2026-11-25"] <= 2 * 86400
    assert 30 * 86400 < ttls["m2026-11"] <= 40 * 86400
    assert ttls["total"] == -1
    with pytest.raises(ValueError, match="braces"):
        RedisBudgetLedger(redis_client, "bad{prefix}")
