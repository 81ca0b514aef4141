-- Cancel tasks that have not started: up to ARGV[5] scheduled ones and up to ARGV[5]
-- stream entries no worker has read yet (one bounded batch, so a large docket never
-- holds Redis for long; Docket.clear calls it until a batch comes back short).
-- Returns how many were cancelled.
-- KEYS: stream, queue
-- ARGV: group, record_prefix, ttl, events_prefix, batch
--   ttl: seconds a cancelled record is kept
local stream, queue = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[3])
local now = fmt_time(server_now())
local count = 0

local function cancel_record(key, expected_state)
  local record = ARGV[2] .. key
  if redis.call('HGET', record, 'state') ~= expected_state then return end
  if ttl > 0 then
    redis.call('HSET', record, 'state', 'cancelled', 'completed', now)
    redis.call('HDEL', record, 'payload', 'sig', 'ser', 'mid')
    redis.call('PEXPIRE', record, math.floor(ttl * 1000))
  else
    redis.call('DEL', record)
  end
  publish_state(ARGV[4], key, 'cancelled', {completed_at = now})
end

local batch = tonumber(ARGV[5])
local due = redis.call('ZRANGE', queue, 0, batch - 1)
for _, key in ipairs(due) do
  cancel_record(key, 'scheduled')
  redis.call('ZREM', queue, key)
  count = count + 1
end

local last = '0-0'
if redis.call('EXISTS', stream) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
    if info['name'] == ARGV[1] then last = info['last-delivered-id'] end
  end
  for _, entry in ipairs(redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', batch)) do
    local fields = entry[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'key' then cancel_record(fields[j + 1], 'queued') end
    end
    redis.call('XDEL', stream, entry[1])
    count = count + 1
  end
end
return count
