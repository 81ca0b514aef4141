-- Add, replace or reschedule one task in a single atomic step.
-- KEYS: 1 stream, 2 queue, 3 record, 4 generation counter
-- ARGV: 1 mode (add|replace|reschedule), 2 key, 3 function, 4 when (epoch seconds),
--       5 payload, 6 signature, 7 attempt, 8 trace context, 9 expected generation,
--       10 events channel prefix, 11 wake channel, 12 serializer
local stream, queue, record, gen_counter = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode, key, fn = ARGV[1], ARGV[2], ARGV[3]
local when = tonumber(ARGV[4])

local current = redis.call('HMGET', record, 'state', 'gen', 'mid')
local state, cur_gen, cur_mid = current[1], current[2], current[3]

if mode == 'add' and (state == 'scheduled' or state == 'queued' or state == 'running') then
  return {'already_scheduled', cur_gen or '0', ''}
end
if mode == 'reschedule' and cur_gen ~= ARGV[9] then
  return {'superseded', cur_gen or '0', ''}
end

-- Whatever copy was waiting is withdrawn; a copy already running is left to finish and
-- is fenced off by the new generation when it settles.
if state == 'scheduled' then
  redis.call('ZREM', queue, key)
elseif state == 'queued' and cur_mid then
  redis.call('XDEL', stream, cur_mid)
end

local gen = redis.call('INCR', gen_counter)
local now = server_now()
redis.call('DEL', record)

if when <= now then
  local mid = redis.call('XADD', stream, '*',
    'key', key, 'gen', gen, 'function', fn, 'when', ARGV[4], 'attempt', ARGV[7],
    'payload', ARGV[5], 'sig', ARGV[6], 'trace', ARGV[8], 'ser', ARGV[12])
  redis.call('HSET', record, 'state', 'queued', 'gen', gen, 'function', fn,
    'when', ARGV[4], 'attempt', ARGV[7], 'trace', ARGV[8], 'mid', mid,
    'created', fmt_time(now))
  publish_state(ARGV[10], key, 'queued', {when = ARGV[4]})
  return {'scheduled', tostring(gen), mid}
end

local earliest = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
-- The score is passed as given: Lua would round a number to 14 digits (100 µs).
redis.call('ZADD', queue, ARGV[4], key)
redis.call('HSET', record, 'state', 'scheduled', 'gen', gen, 'function', fn,
  'when', ARGV[4], 'attempt', ARGV[7], 'trace', ARGV[8], 'payload', ARGV[5],
  'sig', ARGV[6], 'ser', ARGV[12], 'created', fmt_time(now))
-- Wake sleeping schedulers only when this task is due before anything they know of.
if earliest[2] == nil or when < tonumber(earliest[2]) then
  redis.call('PUBLISH', ARGV[11], ARGV[4])
end
publish_state(ARGV[10], key, 'scheduled', {when = ARGV[4]})
return {'scheduled', tostring(gen), ''}
