-- Take a concurrency slot for a run, or park the run until one frees.
-- Parking moves the message's fields into the task's record, adds the key to the FIFO of
-- waiters and acks the stream message, all at once: a blocked run holds no worker slot
-- and no stream message, and a release that happens at any moment still finds it.
-- An unpartitioned docket's (a partitioned one takes a slot in two steps,
-- concurrency_take and concurrency_park.lua, since its runs live in other partitions).
-- KEYS: holders, waiters, stream, record, registry, limits
-- ARGV: group, worker, key, max_concurrent, lease, mid, deliveries, generation,
--       events_prefix
--   holders, waiters: the limit's zsets of slot holders and of parked runs
--   registry, limits: the set of limits in use and the hash of their sizes
--   lease: seconds a slot is held without renewal
-- Returns 1 (slot held), 0 (parked) or -1 (this worker no longer owns the message)
local holders, waiters, stream, record, registry, limits =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local group, worker, key = ARGV[1], ARGV[2], ARGV[3]
local max, lease, mid = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local now = server_now()

local entry = redis.call('XPENDING', stream, group, mid, mid, 1)[1]
if entry == nil or entry[2] ~= worker or tonumber(entry[4]) ~= tonumber(ARGV[7]) then
  return -1
end

redis.call('HSET', limits, holders, max)
redis.call('ZREMRANGEBYSCORE', holders, '-inf', fmt_time(now))
-- Already holding (a woken waiter whose slot was reserved, or a redelivered run whose
-- previous worker died holding it): keep the slot, refresh its lease.
if redis.call('ZSCORE', holders, key) then
  redis.call('ZADD', holders, fmt_time(now + lease), key)
  return 1
end
if redis.call('ZCARD', holders) < max and redis.call('ZCARD', waiters) == 0 then
  redis.call('ZADD', holders, fmt_time(now + lease), key)
  redis.call('SADD', registry, holders)
  return 1
end

if park_record(stream, record, mid, holders, ARGV[8]) then
  -- A woken waiter goes to the back of the line only if it was never in it.
  redis.call('ZADD', waiters, 'NX', fmt_time(now), key)
  redis.call('SADD', registry, holders)
  publish_state(ARGV[9], key, 'scheduled', {})
end
drop_message(stream, group, mid)
return 0
