"""The budget ledger's Lua scripts: each operation is one script, so it is atomic on Redis.

Every script touches only keys under one hash tag, ``{<key_id>}`` (one Redis Cluster slot).
"""

from __future__ import annotations

# Shared Lua prelude. Amounts travel as decimal strings and are formatted back with %d: Lua
# numbers are doubles, and Redis would otherwise turn large ones into "1e+15".
LUA_PRELUDE = """
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

# ARGV 6 budget ('' = unlimited), 7 estimate (the fixed part with a grant), 8 reservation id,
# 9 due, 10 record, 11 spend ttl, 12..15 grant floor, cap, unit numerator, unit denominator
# ('' = no grant). The grant arithmetic mirrors CompletionGrant.units_for; every product stays
# below 2^52 (see CompletionGrant), so Lua's doubles compute it exactly.
LUA_RESERVE = (
    LUA_PRELUDE
    + """
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function cost(units, num, den) return idiv(units * num + den - 1, den) end
local v = redis.call('HMGET', KEYS[4], 'spent', 'reserved')
local spent, reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
local estimate = tonumber(ARGV[7])
local units = 0
if ARGV[12] ~= '' then
  local floor_u, cap_u = tonumber(ARGV[12]), tonumber(ARGV[13])
  local num, den = tonumber(ARGV[14]), tonumber(ARGV[15])
  units = floor_u
  if ARGV[6] ~= '' then
    local available = tonumber(ARGV[6]) - spent - reserved - estimate
    if available >= 0 then
      if num == 0 or available >= cost(cap_u, num, den) then
        units = cap_u
      else
        units = math.max(floor_u, math.min(cap_u, idiv(available * den, num)))
      end
    end
  end
  estimate = estimate + cost(units, num, den)
end
if ARGV[6] ~= '' then
  local budget = tonumber(ARGV[6])
  if spent + reserved >= budget or spent + reserved + estimate > budget then
    return {0, int(spent), int(reserved), int(estimate), int(units)}
  end
end
local record = cjson.decode(ARGV[10])
record.a = int(estimate)
redis.call('HINCRBY', KEYS[4], 'reserved', int(estimate))
redis.call('HINCRBY', KEYS[4], 'requests', '1')
touch(KEYS[4], ARGV[11])
redis.call('HSET', KEYS[2], ARGV[8], cjson.encode(record))
redis.call('ZADD', KEYS[1], ARGV[9], ARGV[8])
return {1, int(spent), int(reserved + estimate), int(estimate), int(units)}
"""
)

# ARGV 6 reservation id, 7 actual, 8 kind, 9.. ledger fields model, prompt, completion, cache, saved
LUA_SETTLE = (
    LUA_PRELUDE
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
LUA_CHARGE = (
    LUA_PRELUDE
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
LUA_STATUS = (
    LUA_PRELUDE
    + """
if ARGV[6] == 'reset' then redis.call('HSET', KEYS[4], 'spent', '0', 'requests', '0') end
return redis.call('HMGET', KEYS[4], 'spent', 'reserved', 'requests')
"""
)

# KEYS: previous minute's counter, this minute's; ARGV: rpm, seconds into this minute
LUA_RATE = """
local prev = tonumber(redis.call('GET', KEYS[1]) or '0')
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if prev * (1 - tonumber(ARGV[2]) / 60) + cur >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 150)
return 1
"""
