-- Settle a batch of finished runs: ack each message and record its final state, but only
-- for messages this worker still owns with the delivery count it was given (a worker that
-- lost its lease must not ack or overwrite the new owner's run).
-- KEYS: stream, failures, runs[record, result_key]
-- ARGV: group, worker, ttl, events_prefix, record_prefix, failures_kept,
--       runs[mid, generation, deliveries, state, error, result, traceback]
--   ttl: seconds a final record is kept (0 = keep nothing)
--   failures_kept: about how many entries the failures stream keeps
--   state: completed | failed | cancelled | ack
--   result: the sealed bytes to keep at result_key, '' for none, 's' kept in
--     result_storage, 'x' lost there (sealed bytes start with '0' or '1', so neither
--     marker is ever a result)
--   traceback: the formatted traceback of a failed run ('' for none)
-- Returns per run: 1 settled, 2 acked only (superseded or already final) or settled
-- before (this worker's own earlier call, sent again after its reply was lost), 0 lease
-- lost
local stream, failures, group, worker = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local ttl = tonumber(ARGV[3])
local clock = server_now()
local now = fmt_time(clock)
local out = {}

-- A run whose final state is failed goes on the failures stream too, with what its record
-- knows and its message's raw fields (so it can be run again): read before the message is
-- deleted. The stream keeps about failures_kept entries, and none older than the records
-- they describe. Trimmed by age exactly: an approximate MINID drops only whole stream
-- nodes (up to 100 entries), so a docket that rarely fails would keep entries for many
-- ttls.
local function log_failure(record, key, gen, mid, err, tb)
  local r = redis.call('HMGET', record, 'function', 'attempt')
  local entry = {'key', key, 'gen', gen, 'function', r[1] or '', 'error', err,
    'traceback', tb, 'attempt', r[2] or '', 'worker', worker, 'failed_at', now}
  local message = redis.call('XRANGE', stream, mid, mid)[1]
  keep_fields(entry, message and message[2] or {})
  redis.call('XADD', failures, 'MAXLEN', '~', ARGV[6], '*', unpack(entry))
  local oldest = math.max(0, math.floor((clock - ttl) * 1000))
  redis.call('XTRIM', failures, 'MINID', string.format('%.0f', oldest))
end

local n = (#KEYS - 2) / 2
for i = 1, n do
  local record, result_key = KEYS[3 + (i - 1) * 2], KEYS[4 + (i - 1) * 2]
  local base = 6 + (i - 1) * 7
  local mid, gen, deliveries = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
  local state, err, result = ARGV[base + 4], ARGV[base + 5], ARGV[base + 6]
  local pending = redis.call('XPENDING', stream, group, mid, mid, 1)
  local entry = pending[1]
  if entry == nil then
    -- Acked already. By this worker, when its record of this generation is final under
    -- this worker's name: the same settle, sent again after a dropped connection.
    local r = redis.call('HMGET', record, 'state', 'gen', 'worker')
    local final = r[1] == 'completed' or r[1] == 'failed' or r[1] == 'cancelled'
    if final and r[2] == gen and r[3] == worker then out[i] = 2 else out[i] = 0 end
  elseif entry[2] ~= worker or tonumber(entry[4]) ~= deliveries then
    out[i] = 0
  else
    local r = redis.call('HMGET', record, 'state', 'gen')
    -- 'cancelled' with this run's generation: cancelled while it ran. The run's own
    -- outcome is the final word (a task that caught the CancelledError and returned
    -- completed); a retry or successor was already refused by schedule.lua.
    local final = state ~= 'ack' and r[2] == gen and (r[1] == 'running' or r[1] == 'cancelled')
    local key = final and string.sub(record, #ARGV[5] + 1)
    if final and state == 'failed' and ttl > 0 then
      log_failure(record, key, gen, mid, err, ARGV[base + 7])
    end
    drop_message(stream, group, mid)
    if final then
      finish_run(record, result_key, ARGV[4], key, state, err, result, ttl, now, ARGV[base + 7])
      out[i] = 1
    else
      out[i] = 2
    end
  end
end
return out
