-- RateLimit: a sliding-window log of admitted runs, one sorted set per limit.
-- Members are '<generation>:<task key>', scored by the Redis server's clock in ms.
-- KEYS: window
-- ARGV: op, member, limit, window_ms, expiry_margin_ms
--   window: the window's sorted set
--   op: 'take' | 'give_back' (give_back ignores the rest)
-- take returns {1, 0} when admitted (the member is recorded), {0, ms until a slot frees}
-- when full. give_back removes the member (a later dependency refused the run).
local window_key, op, member = KEYS[1], ARGV[1], ARGV[2]

if op == 'give_back' then
  return redis.call('ZREM', window_key, member)
end

local limit, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl = window + tonumber(ARGV[5])
local now = math.floor(server_now() * 1000)

-- An entry exactly one window old has left the window.
redis.call('ZREMRANGEBYSCORE', window_key, '-inf', now - window)

-- A redelivered copy of a run already admitted (same generation) is not charged twice.
if redis.call('ZSCORE', window_key, member) then
  return {1, 0}
end

if redis.call('ZCARD', window_key) < limit then
  redis.call('ZADD', window_key, now, member)
  redis.call('PEXPIRE', window_key, ttl)
  return {1, 0}
end

local oldest = redis.call('ZRANGE', window_key, 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then wait = 1 end
if redis.call('PTTL', window_key) < 0 then
  redis.call('PEXPIRE', window_key, ttl)
end
return {0, wait}
