-- Put messages kept in the dead-letter layout (the original message's raw fields as
-- 'field:<name>': a dead letter, a recent failure) back on the task stream as fresh
-- messages (a new generation, so a worker claims them like any newly added task) and
-- remove them from the stream that kept them. A message whose task key has a scheduled,
-- queued or running task right now is left where it is: requeueing it would run a stale
-- copy beside (or instead of) that one. A message goes back to the stream of its level
-- (its 'prio' field; NORMAL without one).
-- KEYS: stream, origin, generation_counter, high_stream, low_stream, entries[record]
-- ARGV: record_prefix, events_prefix, attempt, entries[id]
--   origin: the stream the entries are on (the dead letters, the failures)
--   attempt: the attempt the new runs start at ('' keeps each message's own)
--   entries: each entry's id and the record of its task key
-- Returns per entry {status, detail}: {'requeued', new stream id}, {'missing', ''},
-- {'invalid', why} or {'active', state of the task now under that key}
local stream, origin, gen_counter = KEYS[1], KEYS[2], KEYS[3]
local now = fmt_time(server_now())
local out = {}

local function requeue(id, record)
  local entry = redis.call('XRANGE', origin, id, id)[1]
  if entry == nil then return {'missing', ''} end
  local names, values = {}, {}
  local raw = entry[2]
  for j = 1, #raw, 2 do
    local name = raw[j]
    if string.sub(name, 1, 6) == 'field:' then
      local field = string.sub(name, 7)
      if values[field] == nil then table.insert(names, field) end
      values[field] = raw[j + 1]
    end
  end
  local key, fn = values['key'], values['function']
  if key == nil or key == '' or fn == nil or fn == '' then
    return {'invalid', 'the original message has no task key or function'}
  end
  if record ~= ARGV[1] .. key then
    return {'invalid', 'record key does not match the message'}
  end
  local state = redis.call('HGET', record, 'state')
  if state == 'scheduled' or state == 'queued' or state == 'running' then
    return {'active', state}
  end
  local gen = tostring(redis.call('INCR', gen_counter))
  if values['gen'] == nil then table.insert(names, 'gen') end
  values['gen'] = gen
  if ARGV[3] ~= '' then
    if values['attempt'] == nil then table.insert(names, 'attempt') end
    values['attempt'] = ARGV[3]
  end
  local fields = {}
  for _, name in ipairs(names) do
    table.insert(fields, name)
    table.insert(fields, values[name])
  end
  local prio = values['prio']
  if prio ~= '1' and prio ~= '-1' then prio = '0' end
  local mid = redis.call('XADD', level_stream(KEYS[4], stream, KEYS[5], prio), '*',
    unpack(fields))
  redis.call('DEL', record)
  redis.call('HSET', record, 'state', 'queued', 'gen', gen, 'function', fn, 'mid', mid,
    'created', now, 'trace', values['trace'] or '', 'prio', prio)
  -- Only well-formed numbers reach the record, which readers parse.
  local when, attempt = values['when'], values['attempt']
  if when and string.match(when, '^%d+%.?%d*$') then redis.call('HSET', record, 'when', when) end
  if attempt and string.match(attempt, '^%d+$') then
    redis.call('HSET', record, 'attempt', attempt)
  end
  redis.call('XDEL', origin, id)
  publish_state(ARGV[2], key, 'queued', {when = when})
  return {'requeued', mid}
end

for i = 4, #ARGV do
  table.insert(out, requeue(ARGV[i], KEYS[i + 2]))
end
return out
