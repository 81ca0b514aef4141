-- Claim what the XREADGROUP sent just before this call (on the same connection) delivered
-- to this worker, so reading and claiming take one round trip between them. The worker
-- pipelines the two: Redis runs this the moment the read returns, even one that blocked.
-- Those deliveries are this consumer's pending entries after its watermark (the newest id
-- it has had back from this script; at first the group's last delivered id when the
-- worker started) that were delivered once: redeliveries (XAUTOCLAIM) count two or more
-- and are claimed the usual way.
-- KEYS: stream
-- ARGV: group, worker, watermark, count, events_prefix, record_prefix
--   watermark: the newest id claimed before (exclusive)
-- Returns {watermark, entries}. Each entry is {id, flat fields, started}: started is the
-- claimed run's start time, or false when the entry was not claimed here (a stale copy
-- or a malformed entry: the worker decodes it, then claims or dead-letters it as usual).
-- An entry deleted since its delivery (cancelled) is acked and left out.
local stream, group, worker = KEYS[1], ARGV[1], ARGV[2]
local start = '(' .. ARGV[3]
local pending = redis.call('XPENDING', stream, group, start, '+', tonumber(ARGV[4]), worker)
local watermark = ARGV[3]
local out = {}
local now = nil
for _, p in ipairs(pending) do
  local mid = p[1]
  watermark = mid
  if tonumber(p[4]) == 1 then
    local found = redis.call('XRANGE', stream, mid, mid)[1]
    if found == nil then
      redis.call('XACK', stream, group, mid)
    else
      local fields = found[2]
      local key, gen
      for j = 1, #fields, 2 do
        if fields[j] == 'key' then key = fields[j + 1] elseif fields[j] == 'gen' then gen = fields[j + 1] end
      end
      local started = false
      if key and key ~= '' and gen and string.match(gen, '^%d+$') then
        local record = ARGV[6] .. key
        local r = redis.call('HMGET', record, 'state', 'gen')
        if r[1] == 'queued' and r[2] == gen then
          -- A fresh lease, as claim.lua takes: an entry delivered by an earlier read whose
          -- claim was lost may have been idle for longer than the redelivery timeout.
          if tonumber(p[3]) > 0 then
            redis.call('XCLAIM', stream, group, worker, 0, mid, 'JUSTID')
          end
          now = now or fmt_time(server_now())
          redis.call('HSET', record, 'state', 'running', 'worker', worker, 'started', now, 'mid', mid)
          publish_state(ARGV[5], key, 'running', {worker = worker, started_at = now})
          started = now
        end
      end
      out[#out + 1] = {mid, fields, started}
    end
  end
end
return {watermark, out}
