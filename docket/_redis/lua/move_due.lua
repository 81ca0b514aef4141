-- Move due tasks from the schedule to the stream, at most LIMIT per call, by the Redis
-- server's clock (never a worker's).
-- Each goes to the stream of its level (the record's 'prio'; NORMAL when it has none).
-- KEYS: queue, stream, high_stream, low_stream
-- ARGV: record_prefix, limit, events_prefix
-- Returns {moved, seconds until the next due task or -1 when none}
local queue, stream = KEYS[1], KEYS[2]
local now = server_now()
local due = redis.call('ZRANGEBYSCORE', queue, '-inf', fmt_time(now), 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, key in ipairs(due) do
  local record = ARGV[1] .. key
  local r = redis.call('HMGET', record, 'state', 'gen', 'function', 'when', 'attempt',
    'payload', 'sig', 'trace', 'ser', 'prio', 'meta')
  redis.call('ZREM', queue, key)
  if r[1] == 'scheduled' then
    local prio = r[10] or '0'
    local mid = redis.call('XADD', level_stream(KEYS[3], stream, KEYS[4], prio), '*',
      'key', key, 'gen', r[2], 'function', r[3], 'when', r[4], 'attempt', r[5],
      'payload', r[6], 'sig', r[7], 'trace', r[8], 'ser', r[9], 'prio', prio,
      'meta', r[11] or '')
    redis.call('HSET', record, 'state', 'queued', 'mid', mid)
    redis.call('HDEL', record, 'payload', 'sig', 'ser', 'meta')
    publish_state(ARGV[3], key, 'queued', {when = r[4]})
    moved = moved + 1
  end
end
local next_due = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
local delay = -1
if next_due[2] ~= nil then
  delay = tonumber(next_due[2]) - server_now()
  if delay < 0 then delay = 0 end
end
return {moved, tostring(delay)}
