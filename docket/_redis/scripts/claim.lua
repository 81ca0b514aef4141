-- Claim a batch of delivered messages: each one either becomes RUNNING under this worker
-- or, when it is a stale copy (replaced, cancelled, superseded), is acked away.
-- KEYS: 1 stream, 2.. one record per message
-- ARGV: 1 group, 2 worker, 3 events channel prefix, 4 record key prefix, then per
--       message: id, generation, redelivered (0|1)
-- Returns one entry per message: the started time (string) or 0 when stale.
local stream, group, worker = KEYS[1], ARGV[1], ARGV[2]
local now = fmt_time(server_now())
local out = {}
local n = #KEYS - 1
for i = 1, n do
  local record = KEYS[i + 1]
  local base = 4 + (i - 1) * 3
  local mid, gen, redelivered = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local r = redis.call('HMGET', record, 'state', 'gen', 'key')
  local ok = r[2] == gen and (r[1] == 'queued' or (r[1] == 'running' and redelivered == '1'))
  if ok then
    redis.call('HSET', record, 'state', 'running', 'worker', worker, 'started', now, 'mid', mid)
    local key = string.sub(record, #ARGV[4] + 1)
    publish_state(ARGV[3], key, 'running', {worker = worker, started_at = now})
    out[i] = now
  else
    redis.call('XACK', stream, group, mid)
    redis.call('XDEL', stream, mid)
    out[i] = 0
  end
end
return out
