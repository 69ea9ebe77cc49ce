"""The Lua scripts of :class:`~codeyard.adapters.redis.event_bus.RedisEventBus`: the
operations that must run as one atomic step on the server (see each script's comment)."""

# XAUTOCLAIM, then each claimed entry's delivery count from the PEL, in one atomic step.
CLAIM_SCRIPT = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local counts = {}
for i, entry in ipairs(r[2]) do
  counts[i] = 0
  if entry then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    if p[1] then counts[i] = p[1][4] end
  end
end
return {r[1], r[2], r[3] or {}, counts}
"""

# keep_alive: ARGV = group, consumer, ids. XCLAIM with min-idle 0 resets an entry's idle
# time and, with JUSTID, counts no delivery (checked on Redis 7.0). Only the caller's own
# entries that still exist are touched: a bare XCLAIM would take an entry back from the
# consumer that took it over, and drop a deleted entry from the PEL (Redis 7), which
# claim_stale must report instead. The reads and the claims are one atomic step.
KEEP_ALIVE_SCRIPT = """
local kept = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] and p[1][2] == ARGV[2] and #redis.call('XRANGE', KEYS[1], id, id) == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    kept[#kept + 1] = id
  end
end
return kept
"""

# publish_many: ARGV = maxlen ('' for none), idempotent ('1' or ''), then per entry its
# field count and fields. Idempotent: when the stream's newest entry has exactly the fields
# of the batch's last entry, the batch is already there (the caller's entries are unique,
# and a batch is appended all at once), so nothing is appended and the ids of the stream's
# newest entries, as many as the batch has, are returned: the retry of a call whose reply
# was lost. XREVRANGE, not XREAD '+', which needs Redis 7.4.
PUBLISH_MANY_SCRIPT = """#!lua
local starts, i = {}, 3
while i <= #ARGV do
  starts[#starts + 1] = i
  i = i + 1 + tonumber(ARGV[i]) * 2
end
if ARGV[2] == '1' and #starts > 0 then
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  local at = starts[#starts]
  local count = tonumber(ARGV[at])
  local same = newest ~= nil and #newest[2] == count * 2
  if same then
    for j = 1, count * 2 do
      if newest[2][j] ~= ARGV[at + j] then same = false; break end
    end
  end
  if same then
    local ids = {}
    local got = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', #starts)
    for j = #got, 1, -1 do ids[#ids + 1] = got[j][1] end
    return ids
  end
end
local ids = {}
for _, at in ipairs(starts) do
  local count = tonumber(ARGV[at])
  local fields = {}
  for j = 1, count * 2 do fields[j] = ARGV[at + j] end
  if ARGV[1] == '' then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(fields))
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
  end
end
return ids
"""

# XTRIM MINID below what every group is done with, in one atomic step (a concurrent
# XADD/XREADGROUP/XGROUP CREATE cannot slip between the reads and the trim). Per group the
# bound is min(oldest pending id, last-delivered-id + 1); ids are compared and incremented
# as decimal strings, because Lua numbers (doubles) lose precision past 2^53.
TRIM_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {ms, seq}
end
local function num_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function less(a, b)
  if a[1] ~= b[1] then return num_less(a[1], b[1]) end
  return num_less(a[2], b[2])
end
local function incr(s)
  local out, carry = '', 1
  for i = #s, 1, -1 do
    local d = tonumber(string.sub(s, i, i)) + carry
    carry = (d == 10) and 1 or 0
    out = tostring(d % 10) .. out
  end
  if carry == 1 then out = '1' .. out end
  return out
end
local found, bound = false, nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == ARGV[1] then found = true end
  local last = parse(info['last-delivered-id'])
  local b = {last[1], incr(last[2])}
  if b[2] == '18446744073709551616' then b = last end -- sequence overflow: stay below
  local p = redis.call('XPENDING', KEYS[1], info['name'])
  if p[2] then
    local oldest = parse(p[2])
    if less(oldest, b) then b = oldest end
  end
  if bound == nil or less(b, bound) then bound = b end
end
if not found then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', bound[1] .. '-' .. bound[2])
"""
