-- A partitioned docket's release of a concurrency slot, in the control partition: give
-- back the run's slot, drop expired holders, and reserve the free slots for the
-- longest-waiting runs. Each woken run is then woken in its own partition by
-- concurrency_wake.lua (the worker finds its partition from its key); until the worker
-- confirms that (removing it from `waking`), it stays there, so a worker that dies in
-- between leaves it to the next sweep, which wakes again the runs in `waking` for
-- longer than a lease.
-- KEYS: holders, waiters, registry, limits, waking
-- ARGV: key, lease
--   key: the task key giving its slot back ('' to only sweep)
--   lease: seconds a woken run's reserved slot is held
--   waking: the zset of runs woken here and not yet confirmed, by when
-- Returns the task keys of the runs to wake (those being woken for longer than a lease
-- included)
local holders, waiters, registry, limits, waking = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lease = tonumber(ARGV[2])
local now = server_now()
if ARGV[1] ~= '' then
  redis.call('ZREM', holders, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', holders, '-inf', fmt_time(now))
local max = tonumber(redis.call('HGET', limits, holders) or '1')
local woken = {}
-- Runs woken earlier whose waking was never confirmed: a worker died in between.
for _, key in ipairs(redis.call('ZRANGEBYSCORE', waking, '-inf', fmt_time(now - lease))) do
  if redis.call('ZCARD', holders) >= max and not redis.call('ZSCORE', holders, key) then
    break
  end
  redis.call('ZADD', holders, fmt_time(now + lease), key)
  redis.call('ZADD', waking, fmt_time(now), key)
  table.insert(woken, key)
end
while redis.call('ZCARD', holders) < max do
  local first = redis.call('ZPOPMIN', waiters)
  if first[1] == nil then break end
  local key = first[1]
  redis.call('ZADD', holders, fmt_time(now + lease), key)
  redis.call('ZADD', waking, fmt_time(now), key)
  table.insert(woken, key)
end
if redis.call('ZCARD', holders) == 0 and redis.call('ZCARD', waiters) == 0
    and redis.call('ZCARD', waking) == 0 then
  redis.call('SREM', registry, holders)
  redis.call('HDEL', limits, holders)
end
return woken
