-- Shared helpers, prepended to every script by the loader.
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt_time(t)
  return string.format('%.6f', t)
end

local function publish_state(channel_prefix, key, state, extra)
  local event = {type = 'state', key = key, state = state}
  if extra then
    for k, v in pairs(extra) do event[k] = v end
  end
  redis.call('PUBLISH', channel_prefix .. key, cjson.encode(event))
end

-- The stream of priority level prio ('1' HIGH, '-1' LOW, anything else, a missing field
-- included, NORMAL) among one partition's streams {high, normal, low}.
local function level_stream(high, normal, low, prio)
  if prio == '1' then return high elseif prio == '-1' then return low end
  return normal
end

-- Park a run behind a concurrency limit: copy what rebuilding its message needs from its
-- stream entry into its record, marked parked on `holders`, while the record still
-- belongs to the message's `generation`. Returns whether it did; the caller drops the
-- message either way.
local function park_record(stream, record, mid, holders, generation)
  local entries = redis.call('XRANGE', stream, mid, mid)
  local fields = entries[1] and entries[1][2] or {}
  local copy = {'state', 'scheduled', 'parked', holders}
  for j = 1, #fields, 2 do
    local name = fields[j]
    if name == 'payload' or name == 'sig' or name == 'ser' or name == 'trace'
        or name == 'attempt' or name == 'when' or name == 'function' or name == 'meta' then
      table.insert(copy, name)
      table.insert(copy, fields[j + 1])
    end
  end
  if redis.call('HGET', record, 'gen') ~= generation then
    return false
  end
  redis.call('HSET', record, unpack(copy))
  redis.call('HDEL', record, 'mid', 'worker', 'started')
  return true
end

-- A message done with: out of the group's pending list and off the stream.
local function drop_message(stream, group, mid)
  redis.call('XACK', stream, group, mid)
  redis.call('XDEL', stream, mid)
end

-- Record a run's final state: the state, its time and error, and its result ('' none;
-- 's' or 'x' kept in or lost by the docket's result_storage; else the sealed bytes,
-- kept beside the record); progress and the message id go, as they belong to a run in
-- flight. A failed run keeps its traceback (tb, '' for none); any other end drops one an
-- earlier failure of the record left. The record expires after ttl seconds (is dropped
-- at once with ttl 0). Then the final state is published, with the error only when
-- there is one.
local function finish_run(record, result_key, channel_prefix, key, state, err, result, ttl, now,
    tb)
  if ttl > 0 then
    if state == 'failed' and tb ~= '' then
      redis.call('HSET', record, 'state', state, 'completed', now, 'error', err, 'traceback', tb)
      redis.call('HDEL', record, 'mid', 'pcur', 'ptot', 'pmsg', 'pupd')
    else
      redis.call('HSET', record, 'state', state, 'completed', now, 'error', err)
      redis.call('HDEL', record, 'mid', 'pcur', 'ptot', 'pmsg', 'pupd', 'traceback')
    end
    if result == 's' or result == 'x' then
      redis.call('HSET', record, 'result', result)
    elseif result ~= '' then
      redis.call('SET', result_key, result, 'PX', math.floor(ttl * 1000))
      redis.call('HSET', record, 'result', '1')
    end
    redis.call('PEXPIRE', record, math.floor(ttl * 1000))
  else
    redis.call('DEL', record)
  end
  local extra = {completed_at = now}
  if err ~= '' then extra['error'] = err end
  publish_state(channel_prefix, key, state, extra)
end

-- Append a message's raw fields to `into` as 'field:<name>' pairs: how the dead-letter
-- and failures streams keep a message, so that it can be requeued.
local function keep_fields(into, fields)
  for j = 1, #fields, 2 do
    table.insert(into, 'field:' .. fields[j])
    table.insert(into, fields[j + 1])
  end
end

-- Move one stream message to the dead-letter stream with its raw fields (as
-- 'field:<name>'), the reason, its delivery count and the worker, then ack and delete it.
-- The run's record, while it still belongs to the message's generation, ends failed
-- (kept ctx.ttl seconds, dropped at once with 0) and that is published. ctx holds what
-- every message of one call shares: stream, dead_letters, group, worker, record_prefix,
-- events_prefix, ttl and now (formatted).
local function dead_letter_message(ctx, mid, fields, reason, deliveries)
  local now = ctx.now
  local dl = {'reason', reason, 'deliveries', deliveries, 'stream_id', mid,
    'worker', ctx.worker, 'dead_lettered_at', now}
  keep_fields(dl, fields)
  local key, gen
  for j = 1, #fields, 2 do
    if fields[j] == 'key' then key = fields[j + 1] end
    if fields[j] == 'gen' then gen = fields[j + 1] end
  end
  redis.call('XADD', ctx.dead_letters, '*', unpack(dl))
  drop_message(ctx.stream, ctx.group, mid)
  if key and gen then
    local record = ctx.record_prefix .. key
    if redis.call('HGET', record, 'gen') == gen then
      redis.call('HSET', record, 'state', 'failed', 'completed', now,
        'error', 'dead-lettered: ' .. reason)
      if ctx.ttl > 0 then
        redis.call('PEXPIRE', record, math.floor(ctx.ttl * 1000))
      else
        redis.call('DEL', record)
      end
      publish_state(ctx.events_prefix, key, 'failed', {completed_at = now})
    end
  end
end
