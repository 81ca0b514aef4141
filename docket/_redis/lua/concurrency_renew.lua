-- Extend the leases of the slots held by a worker's running tasks.
-- KEYS: holders zsets, one per slot
-- ARGV: 1 lease seconds, then one task key per slot
local deadline = server_now() + tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', fmt_time(deadline), ARGV[i + 1])
end
return #KEYS
