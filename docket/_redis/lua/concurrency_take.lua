-- A partitioned docket's first step in taking a concurrency slot, in the control
-- partition where the limit lives: take a free slot, or join the FIFO of waiters. The
-- run's message and record live in its own partition (on a Cluster, maybe another
-- shard), so parking it there is concurrency_park.lua's step; this one only queues it.
-- KEYS: holders, waiters, registry, limits
-- ARGV: key, max_concurrent, lease
--   holders, waiters: the limit's zsets of slot holders and of waiting runs
--   registry, limits: the set of limits in use and the hash of their sizes
--   lease: seconds a slot is held without renewal
-- Returns 1 (slot held) or 0 (queued as a waiter: park the run)
local holders, waiters, registry, limits = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local key, max, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = server_now()

redis.call('HSET', limits, holders, max)
redis.call('ZREMRANGEBYSCORE', holders, '-inf', fmt_time(now))
-- Already holding (woken, its slot reserved; or redelivered after its worker died
-- holding it): keep the slot, refresh its lease.
if redis.call('ZSCORE', holders, key) then
  redis.call('ZADD', holders, fmt_time(now + lease), key)
  return 1
end
local first = redis.call('ZRANGE', waiters, 0, 0)[1]
if redis.call('ZCARD', holders) < max and (first == nil or first == key) then
  redis.call('ZREM', waiters, key)
  redis.call('ZADD', holders, fmt_time(now + lease), key)
  redis.call('SADD', registry, holders)
  return 1
end
-- A woken waiter goes to the back of the line only if it was never in it.
redis.call('ZADD', waiters, 'NX', fmt_time(now), key)
redis.call('SADD', registry, holders)
return 0
