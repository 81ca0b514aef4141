-- A worker's heartbeat: when it was last seen and which tasks it can run.
-- KEYS: workers, worker_tasks
-- ARGV: worker, window, task_names...
--   workers, worker_tasks: the zset of workers and this worker's set of task names
--   window: the liveness window in seconds
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
