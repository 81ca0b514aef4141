-- Claim a batch of delivered messages: each one either becomes RUNNING under this worker
-- or, when it is a stale copy (replaced, cancelled, superseded), is acked away.
-- KEYS: stream, messages[record]
-- ARGV: group, worker, events_prefix, record_prefix,
--       messages[mid, generation, redelivered, deliveries]
--   redelivered: 1 for a message redelivered from another consumer, else 0
-- Returns one entry per message: the started time (string), -1 when this worker no longer
-- owns the message (left alone), or why it was a stale copy, acked away: 0 its task has no
-- record (it expired, or was never written), 1 a newer schedule of the key superseded it,
-- 2 its run is no longer waiting to start (cancelled, finished, or running elsewhere).
-- Why a copy that may not run is stale, by its record's generation (false: no record).
local function stale_reason(record_gen, gen)
  if record_gen == false then return 0 end
  if record_gen ~= gen then return 1 end
  return 2
end

local stream, group, worker = KEYS[1], ARGV[1], ARGV[2]
local now = fmt_time(server_now())
local out = {}
local n = #KEYS - 1
for i = 1, n do
  local record = KEYS[i + 1]
  local base = 4 + (i - 1) * 4
  local mid, gen, redelivered, deliveries =
    ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  -- Only the message's current owner may claim it: a worker that stalled between reading
  -- and claiming must not touch a run another worker has since taken over.
  local entry = redis.call('XPENDING', stream, group, mid, mid, 1)[1]
  local owned = entry ~= nil and entry[2] == worker and tonumber(entry[4]) == tonumber(deliveries)
  local r = redis.call('HMGET', record, 'state', 'gen', 'worker', 'mid')
  -- A redelivered copy may take over a run whose worker died; a retried claim (the reply
  -- to the first one was lost) finds its own claim already in place.
  local ok = r[2] == gen and (r[1] == 'queued' or (r[1] == 'running' and
    (redelivered == '1' or (r[3] == worker and r[4] == mid))))
  if not owned then
    out[i] = -1
  elseif ok then
    -- The run starts with a whole lease: a claim that came late (its first one lost
    -- with a dropped connection) must not leave the message idle past the redelivery
    -- timeout, or another worker's sweep would take it over and run it too.
    if tonumber(entry[3]) > 0 then
      redis.call('XCLAIM', stream, group, worker, 0, mid, 'JUSTID')
    end
    redis.call('HSET', record, 'state', 'running', 'worker', worker, 'started', now, 'mid', mid)
    local key = string.sub(record, #ARGV[4] + 1)
    publish_state(ARGV[3], key, 'running', {worker = worker, started_at = now})
    out[i] = now
  else
    drop_message(stream, group, mid)
    out[i] = stale_reason(r[2], gen)
  end
end
return out
