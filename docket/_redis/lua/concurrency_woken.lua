-- A partitioned docket's confirmation that a run concurrency_free.lua woke has been woken
-- in its own partition (or found gone): it leaves `waking`. A limit with nothing left
-- (no holders, waiters or runs being woken) leaves the registry, as concurrency_free.lua
-- would have made it: the run may have finished and released its slot meanwhile.
-- KEYS: holders, waiters, registry, limits, waking
-- ARGV: key
local holders, waiters, registry, limits, waking = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
redis.call('ZREM', waking, ARGV[1])
if redis.call('ZCARD', holders) == 0 and redis.call('ZCARD', waiters) == 0
    and redis.call('ZCARD', waking) == 0 then
  redis.call('SREM', registry, holders)
  redis.call('HDEL', limits, holders)
end
return 0
