"""Per-key spend budgets: atomic reserve-then-settle, a spend ledger and an RPM limiter.

A request reserves an estimate before it is forwarded and settles to the real cost after, so N
concurrent requests can never spend more than the budget. A reservation that is never settled
(the proxy crashed) is turned into spend once it expires, so spend is never lost. Money is
integer micro-USD throughout.

Ledger rows are deltas to spend: summing `micro_usd` over a key's rows gives what it was charged.
`kind` says where a row came from: settle, release, charge, expired (a reservation turned into
spend because nobody settled it), late_settle / late_release (a settle after that, charging the
difference between the real cost and the estimate already charged).
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Protocol

import orjson
import redis.asyncio as aioredis

from proxy.periods import Clock, Period, as_utc, spend_ttl_s, window_at

DEFAULT_LEDGER_MAXLEN = 100_000
DEFAULT_RESERVATION_TTL_S = 900
# After an expired reservation has become spend, remember it this long so a late settle
# corrects the charge to the real cost instead of charging twice.
LATE_SETTLE_GRACE_S = 86_400
_COUNTED_KINDS = frozenset({"settle", "release", "charge", "expired"})


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
    ) -> Reservation | BudgetRefusal:
        """Atomically set the estimate aside, or refuse if it does not fit the budget."""
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
    ) -> bool:
        """Replace the reservation by the real cost; False if it was already settled."""
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


def _check(key_id: str, *amounts: int) -> None:
    if not key_id:
        raise ValueError("key_id must not be empty")
    if any(amount < 0 for amount in amounts):
        raise ValueError("amounts must not be negative")


def _refused(spent: int, reserved: int, estimate: int, budget: int | None) -> bool:
    # An exhausted budget refuses even a zero estimate: the request would still cost something.
    if budget is None:
        return False
    return spent + reserved >= budget or spent + reserved + estimate > budget


def _remaining(budget: int | None, spent: int, reserved: int) -> int | None:
    return None if budget is None else max(0, budget - spent - reserved)


def _usage_fields(
    model: str, prompt_tokens: int, completion_tokens: int, cache: str, saved_micro: int
) -> dict[str, str]:
    # Insertion order is the order the Lua scripts read these from ARGV.
    return {
        "model": model,
        "prompt_tokens": str(prompt_tokens),
        "completion_tokens": str(completion_tokens),
        "cache": cache,
        "saved_micro": str(saved_micro),
    }


def _row(kind: str, key_id: str, micro: int, now: float, usage: dict[str, str]) -> dict[str, str]:
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
        acc[0] += row.get("kind", "settle") in _COUNTED_KINDS
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


class MemoryBudgetLedger:
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
            usage = _usage_fields(held.model, 0, 0, "", 0)
            state.ledger.append(_row("expired", key_id, held.amount, now, usage))
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
    ) -> Reservation | BudgetRefusal:
        """Atomically set the estimate aside, or refuse if it does not fit the budget."""
        _check(key_id, estimate_micro)
        now = self._clock()
        period_id, resets_at = window_at(period, now)
        state = self._state(key_id, now)
        tally = state.tallies.get(period_id, _Tally())
        if _refused(tally.spent, tally.reserved, estimate_micro, budget_micro):
            assert budget_micro is not None
            return BudgetRefusal(
                key_id,
                budget_micro,
                tally.spent,
                tally.reserved,
                estimate_micro,
                period_id,
                resets_at,
            )
        tally = self._tally(state, period, period_id, now)
        tally.reserved += estimate_micro
        tally.requests += 1
        rid = secrets.token_hex(12)
        due = now + reservation_ttl_s
        state.held[rid] = _Held(period, period_id, estimate_micro, model, due)
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
        _check(reservation.key_id, actual_micro, saved_micro)
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
        usage = _usage_fields(model, prompt_tokens, completion_tokens, cache_result, saved_micro)
        state.ledger.append(_row(kind, reservation.key_id, micro, now, usage))
        return True

    async def release(self, reservation: Reservation) -> bool:
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
        _check(key_id, actual_micro, saved_micro)
        now = self._clock()
        state = self._state(key_id, now)
        tally = self._tally(state, period, window_at(period, now)[0], now)
        tally.spent += actual_micro
        tally.requests += 1
        usage = _usage_fields(model, prompt_tokens, completion_tokens, cache_result, saved_micro)
        state.ledger.append(_row("charge", key_id, actual_micro, now, usage))

    async def status(self, key_id: str, budget_micro: int | None, period: Period) -> BudgetStatus:
        """Spend, reservations and remaining budget in the current period."""
        _check(key_id)
        now = self._clock()
        period_id, resets_at = window_at(period, now)
        tally = self._state(key_id, now).tallies.get(period_id, _Tally())
        return BudgetStatus(
            tally.spent,
            tally.reserved,
            _remaining(budget_micro, tally.spent, tally.reserved),
            period_id,
            resets_at,
            tally.requests,
        )

    async def reset(self, key_id: str, period: Period) -> None:
        """Zero the current period's spend; in-flight reservations still count."""
        _check(key_id)
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
        _check(key_id)
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


class RedisBudgetLedger:
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
        _check(key_id, estimate_micro)
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
        _check(reservation.key_id, actual_micro, saved_micro)
        keys, args = self._frame(reservation.key_id, self._clock())
        usage = _usage_fields(model, prompt_tokens, completion_tokens, cache_result, saved_micro)
        args += [reservation.id, str(actual_micro), kind, *usage.values()]
        return bool(int(await self._settle(keys=keys, args=args)))

    async def release(self, reservation: Reservation) -> bool:
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
        _check(key_id, actual_micro, saved_micro)
        now = self._clock()
        ttl = spend_ttl_s(period)
        keys, args = self._frame(key_id, now, window_at(period, now)[0])
        usage = _usage_fields(model, prompt_tokens, completion_tokens, cache_result, saved_micro)
        args += [str(actual_micro), "" if ttl is None else str(ttl), *usage.values()]
        await self._charge(keys=keys, args=args)

    async def _tally(self, key_id: str, period: Period, op: str) -> tuple[list[int], str, datetime | None]:
        _check(key_id)
        now = self._clock()
        period_id, resets_at = window_at(period, now)
        keys, args = self._frame(key_id, now, period_id)
        values = await self._status(keys=keys, args=[*args, op])
        return [_int(v) for v in values], period_id, resets_at

    async def status(self, key_id: str, budget_micro: int | None, period: Period) -> BudgetStatus:
        """Spend, reservations and remaining budget in the current period."""
        (spent, reserved, requests), period_id, resets_at = await self._tally(key_id, period, "")
        remaining = _remaining(budget_micro, spent, reserved)
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
        _check(key_id)
        minute, fraction = divmod(self._clock(), 60.0)
        base = f"{self._prefix}:rpm:{{{key_id}}}:"
        keys = [f"{base}{int(minute) - 1}", f"{base}{int(minute)}"]
        return bool(int(await self._rate(keys=keys, args=[str(rpm), repr(fraction)])))
