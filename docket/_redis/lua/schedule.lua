-- Add, replace or reschedule one task in a single atomic step.
-- KEYS: stream, queue, record, generation_counter, high_stream, low_stream
-- ARGV: mode, key, function, when, payload, signature, attempt, trace,
--       expected_generation, events_prefix, wake_channel, serializer, generated_key,
--       priority, meta
--   mode: add | replace | reschedule
--   when: epoch seconds, as text
--   expected_generation: the generation a reschedule must still find
--   generated_key: '1' when the caller generated the key for this call (an add
--     without a key), else ''
--   stream, high_stream, low_stream: the partition's NORMAL, HIGH and LOW streams
--   priority: the level ('1', '0' or '-1'), kept as 'prio' in the message and record
--   meta: the run's integration metadata (JSON text, '' for none), kept as 'meta' in the
--     message (in the record while scheduled, as the payload is)
local stream, queue, record, gen_counter = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode, key, fn = ARGV[1], ARGV[2], ARGV[3]
local when = tonumber(ARGV[4])

local current = redis.call('HMGET', record, 'state', 'gen', 'mid', 'prio')
local state, cur_gen, cur_mid = current[1], current[2], current[3]
local prio = ARGV[14]

-- A key generated for this very call that already has a record was written by this call:
-- its first attempt went through, and it was sent again after a dropped connection.
if ARGV[13] == '1' and state then
  return {'scheduled', cur_gen or '0', cur_mid or ''}
end

if mode == 'add' and (state == 'scheduled' or state == 'queued' or state == 'running') then
  return {'already_scheduled', cur_gen or '0', ''}
end
if mode == 'reschedule' and (cur_gen ~= ARGV[9] or state == 'cancelled') then
  -- A replace made while the run went wins, and so does a cancel that came too late to
  -- stop the run: its Retry or Perpetual must not schedule the key again.
  return {'superseded', cur_gen or '0', ''}
end

-- Whatever copy was waiting is withdrawn; a copy already running is left to finish and
-- is fenced off by the new generation when it settles.
if state == 'scheduled' then
  redis.call('ZREM', queue, key)
elseif state == 'queued' and cur_mid then
  redis.call('XDEL', level_stream(KEYS[5], stream, KEYS[6], current[4]), cur_mid)
end

local gen = redis.call('INCR', gen_counter)
local now = server_now()
redis.call('DEL', record)

if when <= now then
  local mid = redis.call('XADD', level_stream(KEYS[5], stream, KEYS[6], prio), '*',
    'key', key, 'gen', gen, 'function', fn, 'when', ARGV[4], 'attempt', ARGV[7],
    'payload', ARGV[5], 'sig', ARGV[6], 'trace', ARGV[8], 'ser', ARGV[12], 'prio', prio,
    'meta', ARGV[15])
  redis.call('HSET', record, 'state', 'queued', 'gen', gen, 'function', fn,
    'when', ARGV[4], 'attempt', ARGV[7], 'trace', ARGV[8], 'mid', mid,
    'created', fmt_time(now), 'prio', prio)
  publish_state(ARGV[10], key, 'queued', {when = ARGV[4]})
  return {'scheduled', tostring(gen), mid}
end

local earliest = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
-- The score is passed as given: Lua would round a number to 14 digits (100 µs).
redis.call('ZADD', queue, ARGV[4], key)
redis.call('HSET', record, 'state', 'scheduled', 'gen', gen, 'function', fn,
  'when', ARGV[4], 'attempt', ARGV[7], 'trace', ARGV[8], 'payload', ARGV[5],
  'sig', ARGV[6], 'ser', ARGV[12], 'created', fmt_time(now), 'prio', prio, 'meta', ARGV[15])
-- Wake sleeping schedulers only when this task is due before anything they know of.
if earliest[2] == nil or when < tonumber(earliest[2]) then
  redis.call('PUBLISH', ARGV[11], ARGV[4])
end
publish_state(ARGV[10], key, 'scheduled', {when = ARGV[4]})
return {'scheduled', tostring(gen), ''}
