-- Move messages that cannot be run (undecodable, garbled, unknown task, bad signature) to
-- the dead-letter stream with their raw fields, the reason and the delivery count.
-- KEYS: 1 stream, 2 dead-letter stream
-- ARGV: 1 group, 2 worker, 3 record key prefix, 4 events channel prefix,
--       5 ttl seconds, then per message: id, reason, deliveries
local stream, dead, group, worker = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local now = fmt_time(server_now())
local ttl = tonumber(ARGV[5])
for i = 6, #ARGV, 3 do
  local mid, reason, deliveries = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local entries = redis.call('XRANGE', stream, mid, mid)
  local dl = {'reason', reason, 'deliveries', deliveries, 'stream_id', mid, 'worker', worker,
    'dead_lettered_at', now}
  local key, gen
  if entries[1] ~= nil then
    local fields = entries[1][2]
    for j = 1, #fields, 2 do
      table.insert(dl, 'field:' .. fields[j])
      table.insert(dl, fields[j + 1])
      if fields[j] == 'key' then key = fields[j + 1] end
      if fields[j] == 'gen' then gen = fields[j + 1] end
    end
  end
  redis.call('XADD', dead, '*', unpack(dl))
  redis.call('XACK', stream, group, mid)
  redis.call('XDEL', stream, mid)
  if key and gen then
    local record = ARGV[3] .. key
    if redis.call('HGET', record, 'gen') == gen then
      redis.call('HSET', record, 'state', 'failed', 'completed', now, 'error', 'dead-lettered: ' .. reason)
      if ttl > 0 then redis.call('PEXPIRE', record, math.floor(ttl * 1000)) else redis.call('DEL', record) end
      publish_state(ARGV[4], key, 'failed', {completed_at = now})
    end
  end
end
return 1
