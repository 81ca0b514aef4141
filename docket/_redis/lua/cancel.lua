-- Cancel one task: withdraw a scheduled or queued copy, and tell the workers to stop a
-- running one (best effort: its asyncio task is cancelled).
-- KEYS: stream, queue, record, high_stream, low_stream
-- ARGV: key, ttl, events_prefix, cancel_channel, expected_generation, spared_generation
--   ttl: seconds the cancelled record is kept
--   expected_generation: cancel only the run of this generation ('' = any)
--   spared_generation: never cancel the run of this generation ('' = none)
--   stream, high_stream, low_stream: the partition's streams; the record's 'prio' says
--     which holds a queued copy
-- Returns the state the task was in ('' when unknown or already final).
local queue, record = KEYS[2], KEYS[3]
local key, ttl = ARGV[1], tonumber(ARGV[2])
local r = redis.call('HMGET', record, 'state', 'mid', 'gen', 'prio')
local state, mid, gen = r[1], r[2], r[3]
local stream = level_stream(KEYS[4], KEYS[1], KEYS[5], r[4])
if state ~= 'scheduled' and state ~= 'queued' and state ~= 'running' then
  return ''
end
if ARGV[5] ~= '' and gen ~= ARGV[5] then
  return ''
end
if ARGV[6] ~= nil and ARGV[6] ~= '' and gen == ARGV[6] then
  return ''
end
-- The record keeps the call (a queued or running copy's payload lives in its stream
-- entry, about to go), so get_execution still shows what was cancelled.
if mid and redis.call('HEXISTS', record, 'payload') == 0 then
  local entry = redis.call('XRANGE', stream, mid, mid)[1]
  if entry then
    local fields = entry[2]
    for i = 1, #fields, 2 do
      local name = fields[i]
      if name == 'payload' or name == 'sig' or name == 'ser' then
        redis.call('HSET', record, name, fields[i + 1])
      end
    end
  end
end
if state == 'scheduled' then
  redis.call('ZREM', queue, key)
elseif state == 'queued' and mid then
  redis.call('XDEL', stream, mid)
elseif state == 'running' then
  redis.call('PUBLISH', ARGV[4], key)
end
local now = fmt_time(server_now())
if ttl > 0 then
  redis.call('HSET', record, 'state', 'cancelled', 'completed', now)
  -- A running copy still settles its message; its record expires with the rest.
  redis.call('PEXPIRE', record, math.floor(ttl * 1000))
elseif state == 'running' then
  redis.call('HSET', record, 'state', 'cancelled', 'completed', now)
  redis.call('PEXPIRE', record, 60000)
else
  redis.call('DEL', record)
end
-- A running copy publishes its own final state when it settles: cancelled, or completed
-- when it chose to finish anyway (it caught the CancelledError).
if state ~= 'running' then
  publish_state(ARGV[3], key, 'cancelled', {completed_at = now})
end
return state
