"""The Redis budget ledger: every operation is one Lua script, so replicas can never overspend."""

from __future__ import annotations

import secrets
import time
from datetime import datetime

import orjson
import redis.asyncio as aioredis

from proxy.budget.lua import LUA_CHARGE, LUA_RATE, LUA_RESERVE, LUA_SETTLE, LUA_STATUS
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
    remaining_of,
    summarise,
    usage_fields,
)
from proxy.keys.periods import Clock, Period, spend_ttl_s, window_at


def _int(value: object) -> int:
    return int(value) if isinstance(value, bytes | str | int) else 0


class RedisBudgetLedger(ReleaseBySettle):
    """Budgets in Redis, shared by every replica; each operation is one Lua script.

    Keys of one managed key share the hash tag `{<key_id>}` so the scripts run on one Redis
    Cluster slot: `<prefix>:budget:{<key_id>}:resv` (zset id -> due), `...:resvdata` (hash),
    `...:ledger` (stream), `...:p:<period_id>` (hash spent/reserved/requests).
    The ledger is one stream per key so it can be written in the same atomic script.
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        prefix: str,
        clock: Clock = time.time,
        *,
        ledger_maxlen: int = DEFAULT_LEDGER_MAXLEN,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("prefix must not contain braces: they would change the hash tag")
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._maxlen = str(ledger_maxlen)
        self._reserve = client.register_script(LUA_RESERVE)
        self._settle = client.register_script(LUA_SETTLE)
        self._charge = client.register_script(LUA_CHARGE)
        self._status = client.register_script(LUA_STATUS)
        self._rate = client.register_script(LUA_RATE)

    def _base(self, key_id: str) -> str:
        return f"{self._prefix}:budget:{{{key_id}}}:"

    def ledger_key(self, key_id: str) -> str:
        """The Redis stream holding this key's ledger (for audits and exports)."""
        return self._base(key_id) + "ledger"

    def _frame(self, key_id: str, now: float, period_id: str | None = None) -> tuple[list[str], list[str]]:
        base = self._base(key_id)
        keys = [base + "resv", base + "resvdata", base + "ledger"]
        if period_id is not None:
            keys.append(base + "p:" + period_id)
        args = [key_id, base + "p:", repr(now), self._maxlen, str(LATE_SETTLE_GRACE_S)]
        return keys, args

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
        ttl = spend_ttl_s(period)
        rid, due = secrets.token_hex(12), now + reservation_ttl_s
        record = {"s": "R", "pid": period_id, "a": str(estimate_micro), "m": model}
        record["t"] = "" if ttl is None else str(ttl)
        keys, args = self._frame(key_id, now, period_id)
        args += ["" if budget_micro is None else str(budget_micro), str(estimate_micro), rid]
        args += [repr(due), orjson.dumps(record).decode(), record["t"]]
        if grant is None:
            args += ["", "", "", ""]
        else:
            args += [str(grant.floor), str(grant.cap), str(grant.unit_num), str(grant.unit_den)]
        granted, spent, reserved, estimate, units = await self._reserve(keys=keys, args=args)
        if not int(granted):
            assert budget_micro is not None
            return BudgetRefusal(
                key_id,
                budget_micro,
                int(spent),
                int(reserved),
                int(estimate),
                period_id,
                resets_at,
            )
        return Reservation(rid, key_id, period, period_id, int(estimate), model, due, int(units))

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
        keys, args = self._frame(reservation.key_id, self._clock())
        usage = usage_fields(model, prompt_tokens, completion_tokens, cache_result, saved_micro)
        args += [reservation.id, str(actual_micro), kind, *usage.values()]
        return bool(int(await self._settle(keys=keys, args=args)))

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
        ttl = spend_ttl_s(period)
        keys, args = self._frame(key_id, now, window_at(period, now)[0])
        usage = usage_fields(model, prompt_tokens, completion_tokens, cache_result, saved_micro)
        args += [str(actual_micro), "" if ttl is None else str(ttl), *usage.values()]
        await self._charge(keys=keys, args=args)

    async def _tally(self, key_id: str, period: Period, op: str) -> tuple[list[int], str, datetime | None]:
        check_amounts(key_id)
        now = self._clock()
        period_id, resets_at = window_at(period, now)
        keys, args = self._frame(key_id, now, period_id)
        values = await self._status(keys=keys, args=[*args, op])
        return [_int(v) for v in values], period_id, resets_at

    async def status(self, key_id: str, budget_micro: int | None, period: Period) -> BudgetStatus:
        """Spend, reservations and remaining budget in the current period."""
        (spent, reserved, requests), period_id, resets_at = await self._tally(key_id, period, "")
        remaining = remaining_of(budget_micro, spent, reserved)
        return BudgetStatus(spent, reserved, remaining, period_id, resets_at, requests)

    async def reset(self, key_id: str, period: Period) -> None:
        """Zero the current period's spend; in-flight reservations still count."""
        await self._tally(key_id, period, "reset")

    async def usage(self, key_id: str, since: datetime | None = None, limit: int = 10_000) -> UsageSummary:
        """Summarise the newest `limit` ledger rows of a key written at or after `since`."""
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._client.xrevrange(
            self.ledger_key(key_id), count=limit
        )  # type: ignore[assignment]  # redis-py's union covers decode_responses=True too
        rows = ({k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries)
        return summarise(key_id, since, rows, limit)

    async def allow_request(self, key_id: str, rpm: int) -> bool:
        """Count one request against a sliding one-minute window; False if over `rpm`."""
        check_amounts(key_id)
        minute, fraction = divmod(self._clock(), 60.0)
        base = f"{self._prefix}:rpm:{{{key_id}}}:"
        keys = [f"{base}{int(minute) - 1}", f"{base}{int(minute)}"]
        return bool(int(await self._rate(keys=keys, args=[str(rpm), repr(fraction)])))
