-- Settle a batch of finished runs: ack each message and record its final state, but only
-- for messages this worker still owns with the delivery count it was given (a worker that
-- lost its lease must not ack or overwrite the new owner's run).
-- KEYS: stream, runs[record, result_key]
-- ARGV: group, worker, ttl, events_prefix, record_prefix,
--       runs[mid, generation, deliveries, state, error, result]
--   ttl: seconds a final record is kept (0 = keep nothing)
--   state: completed | failed | cancelled | ack
--   result: the sealed bytes to keep at result_key, '' for none, 's' kept in
--     result_storage, 'x' lost there (sealed bytes start with '0' or '1', so neither
--     marker is ever a result)
-- Returns per run: 1 settled, 2 acked only (superseded or already final) or settled
-- before (this worker's own earlier call, sent again after its reply was lost), 0 lease
-- lost
local stream, group, worker = KEYS[1], ARGV[1], ARGV[2]
local ttl = tonumber(ARGV[3])
local now = fmt_time(server_now())
local out = {}
local n = (#KEYS - 1) / 2
for i = 1, n do
  local record, result_key = KEYS[2 + (i - 1) * 2], KEYS[3 + (i - 1) * 2]
  local base = 5 + (i - 1) * 6
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
    drop_message(stream, group, mid)
    local r = redis.call('HMGET', record, 'state', 'gen')
    -- 'cancelled' with this run's generation: cancelled while it ran. The run's own
    -- outcome is the final word (a task that caught the CancelledError and returned
    -- completed); a retry or successor was already refused by schedule.lua.
    if state ~= 'ack' and r[2] == gen and (r[1] == 'running' or r[1] == 'cancelled') then
      local key = string.sub(record, #ARGV[5] + 1)
      finish_run(record, result_key, ARGV[4], key, state, err, result, ttl, now)
      out[i] = 1
    else
      out[i] = 2
    end
  end
end
return out
