-- Extend the leases of the slots held by a worker's running tasks.
-- KEYS: slots[holders]
-- ARGV: lease, slots[key]
--   lease: seconds from now the slots are held
local deadline = server_now() + tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', fmt_time(deadline), ARGV[i + 1])
end
return #KEYS
