"""The in-process budget ledger, for the embedded single-process mode (same rules as Redis)."""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice

from proxy.budget.types import (
    DEFAULT_LEDGER_MAXLEN,
    DEFAULT_RESERVATION_TTL_S,
    LATE_SETTLE_GRACE_S,
    BudgetRefusal,
    BudgetStatus,
    CompletionGrant,
    ReleaseBySettle,
    Reservation,
    UsageSummary,
    check_amounts,
    is_refused,
    ledger_row,
    remaining_of,
    summarise,
    usage_fields,
)
from proxy.keys.periods import Clock, Period, spend_ttl_s, window_at


@dataclass(slots=True)
class _Tally:
    spent: int = 0
    reserved: int = 0
    requests: int = 0
    expires_at: float | None = None


@dataclass(slots=True)
class _Held:
    period: Period
    period_id: str
    amount: int
    model: str
    due: float
    expired: bool = False


@dataclass(slots=True)
class _KeyState:
    tallies: dict[str, _Tally] = field(default_factory=dict)
    held: dict[str, _Held] = field(default_factory=dict)
    ledger: deque[dict[str, str]] = field(default_factory=deque)
    window: tuple[int, int, int] = (0, 0, 0)  # minute, previous minute's count, this minute's


class MemoryBudgetLedger(ReleaseBySettle):
    """In-process ledger with the Redis ledger's semantics, for the embedded single-process mode.

    Every method runs without awaiting in between, so each is atomic on the event loop.
    """

    def __init__(self, clock: Clock = time.time, *, ledger_maxlen: int = DEFAULT_LEDGER_MAXLEN) -> None:
        self._clock = clock
        self._maxlen = ledger_maxlen
        self._keys: dict[str, _KeyState] = {}

    def _state(self, key_id: str, now: float) -> _KeyState:
        state = self._keys.get(key_id)
        if state is None:
            state = self._keys[key_id] = _KeyState(ledger=deque(maxlen=self._maxlen))
        for rid, held in list(state.held.items()):
            if held.due > now:
                continue
            if held.expired:
                del state.held[rid]
                continue
            tally = self._tally(state, held.period, held.period_id, now)
            tally.reserved -= held.amount
            tally.spent += held.amount
            held.expired, held.due = True, now + LATE_SETTLE_GRACE_S
            usage = usage_fields(held.model, 0, 0, "", 0)
            state.ledger.append(ledger_row("expired", key_id, held.amount, now, usage))
        for pid, tally in list(state.tallies.items()):
            if tally.expires_at is not None and tally.expires_at <= now:
                del state.tallies[pid]
        return state

    @staticmethod
    def _tally(state: _KeyState, period: Period, period_id: str, now: float) -> _Tally:
        tally = state.tallies.setdefault(period_id, _Tally())
        ttl = spend_ttl_s(period)
        tally.expires_at = None if ttl is None else now + ttl
        return tally

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
        """Atomically set the estimate aside (sizing a grant), or refuse if it does not fit."""
        check_amounts(key_id, estimate_micro)
        now = self._clock()
        period_id, resets_at = window_at(period, now)
        state = self._state(key_id, now)
        tally = state.tallies.get(period_id, _Tally())
        estimate, units = estimate_micro, 0
        if grant is not None:
            available = (
                None if budget_micro is None else budget_micro - tally.spent - tally.reserved - estimate
            )
            units = grant.units_for(available)
            estimate += grant.cost(units)
        if is_refused(tally.spent, tally.reserved, estimate, budget_micro):
            assert budget_micro is not None
            return BudgetRefusal(
                key_id,
                budget_micro,
                tally.spent,
                tally.reserved,
                estimate,
                period_id,
                resets_at,
            )
        tally = self._tally(state, period, period_id, now)
        tally.reserved += estimate
        tally.requests += 1
        rid = secrets.token_hex(12)
        due = now + reservation_ttl_s
        state.held[rid] = _Held(period, period_id, estimate, model, due)
        return Reservation(rid, key_id, period, period_id, estimate, model, due, units)

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
        """Replace the reservation by the real cost; False if it was already settled."""
        check_amounts(reservation.key_id, actual_micro, saved_micro)
        now = self._clock()
        state = self._state(reservation.key_id, now)
        held = state.held.pop(reservation.id, None)
        if held is None:
            return False
        tally = self._tally(state, held.period, held.period_id, now)
        micro = actual_micro
        if held.expired:
            micro, kind = actual_micro - held.amount, f"late_{kind}"
        else:
            tally.reserved -= held.amount
        tally.spent += micro
        usage = usage_fields(model, prompt_tokens, completion_tokens, cache_result, saved_micro)
        state.ledger.append(ledger_row(kind, reservation.key_id, micro, now, usage))
        return True

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
        check_amounts(key_id, actual_micro, saved_micro)
        now = self._clock()
        state = self._state(key_id, now)
        tally = self._tally(state, period, window_at(period, now)[0], now)
        tally.spent += actual_micro
        tally.requests += 1
        usage = usage_fields(model, prompt_tokens, completion_tokens, cache_result, saved_micro)
        state.ledger.append(ledger_row("charge", key_id, actual_micro, now, usage))

    async def status(self, key_id: str, budget_micro: int | None, period: Period) -> BudgetStatus:
        """Spend, reservations and remaining budget in the current period."""
        check_amounts(key_id)
        now = self._clock()
        period_id, resets_at = window_at(period, now)
        tally = self._state(key_id, now).tallies.get(period_id, _Tally())
        return BudgetStatus(
            tally.spent,
            tally.reserved,
            remaining_of(budget_micro, tally.spent, tally.reserved),
            period_id,
            resets_at,
            tally.requests,
        )

    async def reset(self, key_id: str, period: Period) -> None:
        """Zero the current period's spend; in-flight reservations still count."""
        check_amounts(key_id)
        now = self._clock()
        state = self._state(key_id, now)
        tally = self._tally(state, period, window_at(period, now)[0], now)
        tally.spent = tally.requests = 0

    async def usage(self, key_id: str, since: datetime | None = None, limit: int = 10_000) -> UsageSummary:
        """Summarise the newest `limit` ledger rows of a key written at or after `since`."""
        state = self._keys.get(key_id)
        rows = () if state is None else islice(reversed(state.ledger), limit)
        return summarise(key_id, since, rows, limit)

    async def allow_request(self, key_id: str, rpm: int) -> bool:
        """Count one request against a sliding one-minute window; False if over `rpm`."""
        check_amounts(key_id)
        now = self._clock()
        minute, fraction = divmod(now, 60.0)
        state = self._state(key_id, now)
        last, prev, cur = state.window
        if int(minute) != last:
            prev, cur = (cur if int(minute) == last + 1 else 0), 0
        if prev * (1 - fraction / 60.0) + cur >= rpm:
            state.window = (int(minute), prev, cur)
            return False
        state.window = (int(minute), prev, cur + 1)
        return True
