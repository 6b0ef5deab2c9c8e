"""Budget ledger values, the BudgetLedger protocol and the pure helpers both backends share.

Ledger rows are deltas to spend: summing `micro_usd` over a key's rows gives what it was charged.
`kind` says where a row came from: settle, release, charge, expired (a reservation turned into
spend because nobody settled it), late_settle / late_release (a settle after that, charging the
difference between the real cost and the estimate already charged).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from proxy.keys.periods import Period, as_utc

DEFAULT_LEDGER_MAXLEN = 100_000
DEFAULT_RESERVATION_TTL_S = 900
# After an expired reservation has become spend, remember it this long so a late settle
# corrects the charge to the real cost instead of charging twice.
LATE_SETTLE_GRACE_S = 86_400
COUNTED_KINDS = frozenset({"settle", "release", "charge", "expired"})


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money set aside for one in-flight request; settle or release it exactly once."""

    id: str
    key_id: str
    period: Period
    period_id: str
    estimate_micro: int
    model: str
    expires_at: float  # epoch seconds; after this an unsettled reservation becomes spend
    granted_units: int = 0  # completion tokens per choice the upstream may produce (with a grant)


@dataclass(frozen=True, slots=True)
class CompletionGrant:
    """Completion tokens a reservation may cover: at least ``floor``, at most ``cap``, as many as fit.

    One unit is one completion token in each of the request's ``n`` choices and costs
    ``unit_num / unit_den`` micro-USD. The Redis script does this arithmetic in Lua's doubles, so
    ``cap * unit_num + unit_den`` stays below 2**52 (``proxy.budget.plan`` rounds the unit price up
    to a coarser fraction when it would not): every product is then an exact integer.
    """

    floor: int
    cap: int
    unit_num: int
    unit_den: int

    def cost(self, units: int) -> int:
        """Micro-USD of ``units``, rounded up (a reservation never falls short by rounding)."""
        return -(-units * self.unit_num // self.unit_den)

    def units_for(self, available: int | None) -> int:
        """Units granted when ``available`` micro-USD remain after the fixed part (None: no budget).

        The floor is returned when even it does not fit: the caller's budget check refuses that.
        The Lua reserve script mirrors this exactly.
        """
        if available is None or available < 0:
            return self.floor
        if self.unit_num == 0 or available >= self.cost(self.cap):
            return self.cap
        return max(self.floor, min(self.cap, available * self.unit_den // self.unit_num))


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """Why a reservation was refused; carries what the 429 body and Retry-After need."""

    key_id: str
    budget_micro: int
    spent_micro: int
    reserved_micro: int
    estimate_micro: int
    period_id: str
    resets_at: datetime | None

    def retry_after_s(self, now: datetime) -> int | None:
        """Whole seconds until the period resets (at least 1), or None for a total budget."""
        if self.resets_at is None:
            return None
        return max(1, int((self.resets_at - as_utc(now)).total_seconds() + 0.999))


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A key's standing in its current period; remaining is what new reservations may use."""

    spent_micro: int
    reserved_micro: int
    remaining_micro: int | None  # None: unlimited
    period_id: str
    resets_at: datetime | None
    requests: int  # requests admitted against the budget this period


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """Ledger totals for one model."""

    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    micro_usd: int
    cache_hits: int
    saved_micro: int


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """Ledger totals for one key, overall and per model (sorted by model name)."""

    key_id: str
    since: datetime | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    micro_usd: int
    cache_hits: int
    saved_micro: int
    by_model: tuple[ModelUsage, ...]
    truncated: bool  # `limit` rows were read before reaching `since`: older rows not counted


class BudgetLedger(Protocol):
    """Where budgets, reservations, the spend ledger and rate-limit windows live."""

    async def reserve(
        self,
        key_id: str,
        budget_micro: int | None,
        period: Period,
        estimate_micro: int,
        reservation_ttl_s: int = DEFAULT_RESERVATION_TTL_S,
        *,
        model: str = "",
        grant: CompletionGrant | None = None,
    ) -> Reservation | BudgetRefusal:
        """Atomically set the estimate aside, or refuse if it does not fit the budget.

        With a ``grant`` the estimate is the fixed part and the completion is sized in the same
        atomic step: ``grant.units_for(budget - spent - reserved - estimate)`` units are added.
        """
        ...

    async def settle(
        self,
        reservation: Reservation,
        actual_micro: int,
        *,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cache_result: str,
        saved_micro: int = 0,
        kind: str = "settle",
    ) -> bool:
        """Replace the reservation by the real cost; False if it was already settled.

        `kind` names the ledger row (see the module docstring); `release` passes "release".
        """
        ...

    async def release(self, reservation: Reservation) -> bool:
        """Settle with zero cost: upstream failed before any usage."""
        ...

    async def charge(
        self,
        key_id: str,
        period: Period,
        actual_micro: int,
        *,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cache_result: str,
        saved_micro: int = 0,
    ) -> None:
        """Add spend without a reservation (e.g. a charged cache hit)."""
        ...

    async def status(self, key_id: str, budget_micro: int | None, period: Period) -> BudgetStatus:
        """Spend, reservations and remaining budget in the current period."""
        ...

    async def reset(self, key_id: str, period: Period) -> None:
        """Zero the current period's spend; in-flight reservations still count."""
        ...

    async def usage(self, key_id: str, since: datetime | None = None, limit: int = 10_000) -> UsageSummary:
        """Summarise the newest `limit` ledger rows of a key written at or after `since`."""
        ...

    async def allow_request(self, key_id: str, rpm: int) -> bool:
        """Count one request against a sliding one-minute window; False if over `rpm`."""
        ...


class ReleaseBySettle:
    """Gives a backend `release` as a zero-cost settle, so both backends release alike."""

    async def release(self: BudgetLedger, reservation: Reservation) -> bool:
        """Settle with zero cost: upstream failed before any usage."""
        return await self.settle(
            reservation,
            0,
            model=reservation.model,
            prompt_tokens=0,
            completion_tokens=0,
            cache_result="",
            kind="release",
        )


def check_amounts(key_id: str, *amounts: int) -> None:
    """Refuse an empty key id or a negative amount (a bug upstream of the ledger)."""
    if not key_id:
        raise ValueError("key_id must not be empty")
    if any(amount < 0 for amount in amounts):
        raise ValueError("amounts must not be negative")


def is_refused(spent: int, reserved: int, estimate: int, budget: int | None) -> bool:
    """Whether a reservation of `estimate` must be refused (the Lua reserve script mirrors this)."""
    # An exhausted budget refuses even a zero estimate: the request would still cost something.
    if budget is None:
        return False
    return spent + reserved >= budget or spent + reserved + estimate > budget


def remaining_of(budget: int | None, spent: int, reserved: int) -> int | None:
    """What new reservations may still use; None for an unlimited key."""
    return None if budget is None else max(0, budget - spent - reserved)


def usage_fields(
    model: str, prompt_tokens: int, completion_tokens: int, cache: str, saved_micro: int
) -> dict[str, str]:
    """The usage columns of a ledger row."""
    # Insertion order is the order the Lua scripts read these from ARGV.
    return {
        "model": model,
        "prompt_tokens": str(prompt_tokens),
        "completion_tokens": str(completion_tokens),
        "cache": cache,
        "saved_micro": str(saved_micro),
    }


def ledger_row(kind: str, key_id: str, micro: int, now: float, usage: dict[str, str]) -> dict[str, str]:
    """One ledger row as the streams store it."""
    return {"kind": kind, "key_id": key_id, "micro_usd": str(micro), "ts": repr(now), **usage}


def summarise(
    key_id: str, since: datetime | None, rows: Iterable[Mapping[str, str]], limit: int
) -> UsageSummary:
    """Fold ledger rows (newest first) into totals; stops at the first row older than `since`."""
    cutoff = None if since is None else as_utc(since).timestamp()
    totals: dict[str, list[int]] = {}
    read = 0
    for row in rows:
        if cutoff is not None and float(row.get("ts", "0")) < cutoff:
            return _build(key_id, since, totals, truncated=False)
        read += 1
        acc = totals.setdefault(row.get("model", ""), [0] * 6)
        acc[0] += row.get("kind", "settle") in COUNTED_KINDS
        acc[1] += int(row.get("prompt_tokens", "0"))
        acc[2] += int(row.get("completion_tokens", "0"))
        acc[3] += int(row.get("micro_usd", "0"))
        acc[4] += row.get("cache", "").lower() == "hit"
        acc[5] += int(row.get("saved_micro", "0"))
    return _build(key_id, since, totals, truncated=read >= limit)


def _build(
    key_id: str, since: datetime | None, totals: dict[str, list[int]], *, truncated: bool
) -> UsageSummary:
    models = tuple(ModelUsage(name, *totals[name]) for name in sorted(totals))
    return UsageSummary(
        key_id=key_id,
        since=since,
        requests=sum(m.requests for m in models),
        prompt_tokens=sum(m.prompt_tokens for m in models),
        completion_tokens=sum(m.completion_tokens for m in models),
        micro_usd=sum(m.micro_usd for m in models),
        cache_hits=sum(m.cache_hits for m in models),
        saved_micro=sum(m.saved_micro for m in models),
        by_model=models,
        truncated=truncated,
    )
