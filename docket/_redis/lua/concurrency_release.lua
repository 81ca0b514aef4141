-- Give back a run's concurrency slot, hand free slots to the longest-waiting runs (their
-- slot is reserved for them and their message queued again), and drop expired holders.
-- KEYS: holders, waiters, stream, registry, limits, high_stream, low_stream
-- ARGV: key, lease, record_prefix, events_prefix
--   key: the task key giving its slot back ('' to only sweep)
--   lease: seconds a woken waiter's reserved slot is held
--   stream, high_stream, low_stream: the NORMAL, HIGH and LOW streams a woken run of
--     this partition goes back to, by its record's 'prio' (it keeps its level)
-- An unpartitioned docket's (a partitioned one releases in two steps, concurrency_free
-- and concurrency_wake.lua, since its runs live in other partitions than the limit).
-- Returns how many waiters were woken.
local holders, waiters, registry, limits = KEYS[1], KEYS[2], KEYS[4], KEYS[5]
local now = server_now()
if ARGV[1] ~= '' then
  redis.call('ZREM', holders, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', holders, '-inf', fmt_time(now))
local max = tonumber(redis.call('HGET', limits, holders) or '1')
local woken = 0
while redis.call('ZCARD', holders) < max do
  local first = redis.call('ZPOPMIN', waiters)
  if first[1] == nil then break end
  local key = first[1]
  local record, high, stream, low = ARGV[3] .. key, KEYS[6], KEYS[3], KEYS[7]
  local r = redis.call('HMGET', record, 'state', 'parked', 'gen', 'function', 'when',
    'attempt', 'payload', 'sig', 'trace', 'ser', 'prio', 'meta')
  -- A waiter cancelled or replaced since it parked is simply forgotten.
  if r[1] == 'scheduled' and r[2] == holders then
    local prio = r[11] or '0'
    local mid = redis.call('XADD', level_stream(high, stream, low, prio), '*',
      'key', key, 'gen', r[3], 'function', r[4], 'when', r[5], 'attempt', r[6],
      'payload', r[7], 'sig', r[8], 'trace', r[9], 'ser', r[10], 'prio', prio,
      'meta', r[12] or '')
    redis.call('HSET', record, 'state', 'queued', 'mid', mid)
    redis.call('HDEL', record, 'payload', 'sig', 'ser', 'parked', 'meta')
    redis.call('ZADD', holders, fmt_time(now + tonumber(ARGV[2])), key)
    publish_state(ARGV[4], key, 'queued', {when = r[5]})
    woken = woken + 1
  end
end
if redis.call('ZCARD', holders) == 0 and redis.call('ZCARD', waiters) == 0 then
  redis.call('SREM', registry, holders)
  redis.call('HDEL', limits, holders)
end
return woken
