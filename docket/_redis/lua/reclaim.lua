-- Take over messages whose worker stopped renewing them for longer than the redelivery
-- timeout. Messages delivered more than MAX times are dead-lettered instead of run again.
-- KEYS: stream, dead_letters
-- ARGV: group, worker, min_idle_ms, cursor, count, max_deliveries, record_prefix,
--       events_prefix, ttl
--   ttl: seconds a dead-lettered run's failed record is kept
-- Returns {next cursor, {id, deliveries, field, value, ...}..., deleted ids, dead count}
local stream, dead = KEYS[1], KEYS[2]
local group, worker = ARGV[1], ARGV[2]
local max_deliveries = tonumber(ARGV[6])
local reply = redis.call('XAUTOCLAIM', stream, group, worker, ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local claimed = {}
local dead_count = 0
local ctx = {stream = stream, dead_letters = dead, group = group, worker = worker,
  record_prefix = ARGV[7], events_prefix = ARGV[8], ttl = tonumber(ARGV[9]),
  now = fmt_time(server_now())}
for _, item in ipairs(reply[2]) do
  local mid, fields = item[1], item[2]
  local entry = redis.call('XPENDING', stream, group, mid, mid, 1)[1]
  local deliveries = tonumber(entry[4])
  if deliveries > max_deliveries then
    dead_letter_message(ctx, mid, fields,
      'delivered ' .. deliveries .. ' times without finishing', deliveries)
    dead_count = dead_count + 1
  else
    local out = {mid, tostring(deliveries)}
    for j = 1, #fields do table.insert(out, fields[j]) end
    table.insert(claimed, out)
  end
end
return {reply[1], claimed, reply[3] or {}, dead_count}
