-- Take over messages whose worker stopped renewing them for longer than the redelivery
-- timeout. Messages delivered more than MAX times are dead-lettered instead of run again.
-- KEYS: 1 stream, 2 dead-letter stream
-- ARGV: 1 group, 2 worker, 3 min idle ms, 4 cursor, 5 count, 6 max deliveries,
--       7 record key prefix, 8 events channel prefix, 9 ttl seconds
-- Returns {next cursor, {id, deliveries, field, value, ...}..., deleted ids, dead count}
local stream, dead = KEYS[1], KEYS[2]
local group, worker = ARGV[1], ARGV[2]
local max_deliveries = tonumber(ARGV[6])
local reply = redis.call('XAUTOCLAIM', stream, group, worker, ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local claimed = {}
local dead_count = 0
local now = server_now()
for _, item in ipairs(reply[2]) do
  local mid, fields = item[1], item[2]
  local entry = redis.call('XPENDING', stream, group, mid, mid, 1)[1]
  local deliveries = tonumber(entry[4])
  if deliveries > max_deliveries then
    local dl = {'reason', 'delivered ' .. deliveries .. ' times without finishing',
      'deliveries', deliveries, 'stream_id', mid, 'worker', worker,
      'dead_lettered_at', fmt_time(now)}
    local key, gen
    for j = 1, #fields, 2 do
      table.insert(dl, 'field:' .. fields[j])
      table.insert(dl, fields[j + 1])
      if fields[j] == 'key' then key = fields[j + 1] end
      if fields[j] == 'gen' then gen = fields[j + 1] end
    end
    redis.call('XADD', dead, '*', unpack(dl))
    redis.call('XACK', stream, group, mid)
    redis.call('XDEL', stream, mid)
    if key then
      local record = ARGV[7] .. key
      if redis.call('HGET', record, 'gen') == gen then
        redis.call('HSET', record, 'state', 'failed', 'completed', fmt_time(now),
          'error', 'dead-lettered: delivered ' .. deliveries .. ' times without finishing')
        local ttl = tonumber(ARGV[9])
        if ttl > 0 then redis.call('PEXPIRE', record, math.floor(ttl * 1000)) else redis.call('DEL', record) end
        publish_state(ARGV[8], key, 'failed', {completed_at = fmt_time(now)})
      end
    end
    dead_count = dead_count + 1
  else
    local out = {mid, tostring(deliveries)}
    for j = 1, #fields do table.insert(out, fields[j]) end
    table.insert(claimed, out)
  end
end
return {reply[1], claimed, reply[3] or {}, dead_count}
