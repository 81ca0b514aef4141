-- A worker's heartbeat: when it was last seen and which tasks it can run.
-- KEYS: 1 workers zset, 2 this worker's task set
-- ARGV: 1 worker name, 2 liveness window seconds, then task names
local now = server_now()
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
-- Forget workers that have been silent for far longer than anyone would wait for them.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window * 10)
if #ARGV > 2 then
  redis.call('DEL', KEYS[2])
  redis.call('SADD', KEYS[2], unpack(ARGV, 3))
end
redis.call('PEXPIRE', KEYS[2], math.floor(window * 1000))
return tostring(now)
