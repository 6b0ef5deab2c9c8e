"""The Redis budget ledger: every operation is one Lua script, so replicas can never overspend."""

from __future__ import annotations

import secrets
import time
from datetime import datetime

import orjson
import redis.asyncio as aioredis

from proxy.budget_types import (
    DEFAULT_LEDGER_MAXLEN,
    DEFAULT_RESERVATION_TTL_S,
    LATE_SETTLE_GRACE_S,
    BudgetRefusal,
    BudgetStatus,
    ReleaseBySettle,
    Reservation,
    UsageSummary,
    check_amounts,
    remaining_of,
    summarise,
    usage_fields,
)
from proxy.periods import Clock, Period, spend_ttl_s, window_at

# Shared Lua prelude. Amounts travel as decimal strings and are formatted back with %d: Lua
# numbers are doubles, and Redis would otherwise turn large ones into "1e+15".
_LUA_PRELUDE = """
local function int(n) return string.format('%d', n) end
local function touch(pkey, ttl) if ttl ~= '' then redis.call('EXPIRE', pkey, ttl) end end
local function ledger(lkey, maxlen, row)
  redis.call('XADD', lkey, 'MAXLEN', '~', maxlen, '*', unpack(row))
end
-- A reservation nobody settled (crashed proxy) becomes spend once due; a converted one is
-- kept for a grace period so a late settle charges only the difference, then forgotten.
local function sweep(zkey, hkey, lkey, base, key_id, now, maxlen, grace)
  local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, 256)
  for _, rid in ipairs(due) do
    local raw = redis.call('HGET', hkey, rid)
    local r = raw and cjson.decode(raw)
    if r and r.s == 'R' then
      -- Same hash tag as the declared keys, so this stays on one Cluster slot.
      local pkey = base .. r.pid
      redis.call('HINCRBY', pkey, 'reserved', int(-tonumber(r.a)))
      redis.call('HINCRBY', pkey, 'spent', r.a)
      touch(pkey, r.t)
      r.s = 'X'
      redis.call('HSET', hkey, rid, cjson.encode(r))
      redis.call('ZADD', zkey, int(tonumber(now) + tonumber(grace)), rid)
      ledger(lkey, maxlen, {'kind', 'expired', 'key_id', key_id, 'model', r.m,
        'prompt_tokens', '0', 'completion_tokens', '0', 'micro_usd', r.a, 'cache', '',
        'saved_micro', '0', 'ts', now})
    else
      redis.call('HDEL', hkey, rid)
      redis.call('ZREM', zkey, rid)
    end
  end
end
-- KEYS: 1 reservations zset, 2 reservation records hash, 3 ledger stream, [4 period hash]
-- ARGV: 1 key_id, 2 period-hash base, 3 now, 4 ledger maxlen, 5 grace, then per script
sweep(KEYS[1], KEYS[2], KEYS[3], ARGV[2], ARGV[1], ARGV[3], ARGV[4], ARGV[5])
"""

# ARGV 6 budget ('' = unlimited), 7 estimate, 8 reservation id, 9 due, 10 record, 11 spend ttl
_LUA_RESERVE = (
    _LUA_PRELUDE
    + """
local v = redis.call('HMGET', KEYS[4], 'spent', 'reserved')
local spent, reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
local estimate = tonumber(ARGV[7])
if ARGV[6] ~= '' then
  local budget = tonumber(ARGV[6])
  if spent + reserved >= budget or spent + reserved + estimate > budget then
    return {0, int(spent), int(reserved)}
  end
end
redis.call('HINCRBY', KEYS[4], 'reserved', ARGV[7])
redis.call('HINCRBY', KEYS[4], 'requests', '1')
touch(KEYS[4], ARGV[11])
redis.call('HSET', KEYS[2], ARGV[8], ARGV[10])
redis.call('ZADD', KEYS[1], ARGV[9], ARGV[8])
return {1, int(spent), int(reserved + estimate)}
"""
)

# ARGV 6 reservation id, 7 actual, 8 kind, 9.. ledger fields model, prompt, completion, cache, saved
_LUA_SETTLE = (
    _LUA_PRELUDE
    + """
local raw = redis.call('HGET', KEYS[2], ARGV[6])
if not raw then return 0 end
local r = cjson.decode(raw)
local pkey = ARGV[2] .. r.pid
local micro, kind = ARGV[7], ARGV[8]
if r.s == 'R' then
  redis.call('HINCRBY', pkey, 'reserved', int(-tonumber(r.a)))
else
  micro, kind = int(tonumber(ARGV[7]) - tonumber(r.a)), 'late_' .. kind
end
redis.call('HINCRBY', pkey, 'spent', micro)
touch(pkey, r.t)
redis.call('HDEL', KEYS[2], ARGV[6])
redis.call('ZREM', KEYS[1], ARGV[6])
ledger(KEYS[3], ARGV[4], {'kind', kind, 'key_id', ARGV[1], 'model', ARGV[9],
  'prompt_tokens', ARGV[10], 'completion_tokens', ARGV[11], 'micro_usd', micro,
  'cache', ARGV[12], 'saved_micro', ARGV[13], 'ts', ARGV[3]})
return 1
"""
)

# ARGV 6 actual, 7 spend ttl, 8.. ledger fields model, prompt, completion, cache, saved
_LUA_CHARGE = (
    _LUA_PRELUDE
    + """
redis.call('HINCRBY', KEYS[4], 'spent', ARGV[6])
redis.call('HINCRBY', KEYS[4], 'requests', '1')
touch(KEYS[4], ARGV[7])
ledger(KEYS[3], ARGV[4], {'kind', 'charge', 'key_id', ARGV[1], 'model', ARGV[8],
  'prompt_tokens', ARGV[9], 'completion_tokens', ARGV[10], 'micro_usd', ARGV[6],
  'cache', ARGV[11], 'saved_micro', ARGV[12], 'ts', ARGV[3]})
return 1
"""
)

# ARGV 6: 'reset' zeroes spend and the request count (reservations in flight still stand)
_LUA_STATUS = (
    _LUA_PRELUDE
    + """
if ARGV[6] == 'reset' then redis.call('HSET', KEYS[4], 'spent', '0', 'requests', '0') end
return redis.call('HMGET', KEYS[4], 'spent', 'reserved', 'requests')
"""
)

# KEYS: previous minute's counter, this minute's; ARGV: rpm, seconds into this minute
_LUA_RATE = """
local prev = tonumber(redis.call('GET', KEYS[1]) or '0')
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if prev * (1 - tonumber(ARGV[2]) / 60) + cur >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 150)
return 1
"""


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
        self._reserve = client.register_script(_LUA_RESERVE)
        self._settle = client.register_script(_LUA_SETTLE)
        self._charge = client.register_script(_LUA_CHARGE)
        self._status = client.register_script(_LUA_STATUS)
        self._rate = client.register_script(_LUA_RATE)

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
    ) -> Reservation | BudgetRefusal:
        """Atomically set the estimate aside, or refuse if it does not fit the budget."""
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
        granted, spent, reserved = await self._reserve(keys=keys, args=args)
        if not int(granted):
            assert budget_micro is not None
            return BudgetRefusal(
                key_id,
                budget_micro,
                int(spent),
                int(reserved),
                estimate_micro,
                period_id,
                resets_at,
            )
        return Reservation(rid, key_id, period, period_id, estimate_micro, model, due)

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
