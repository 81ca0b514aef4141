-- Record progress of a running task, if the key still belongs to this run.
-- KEYS: 1 record
-- ARGV: 1 generation, 2 current, 3 total, 4 message ('' clears it),
--       5 message set (0|1), 6 events channel prefix, 7 key
local record = KEYS[1]
if redis.call('HGET', record, 'gen') ~= ARGV[1] then return 0 end
local now = fmt_time(server_now())
redis.call('HSET', record, 'pcur', ARGV[2], 'ptot', ARGV[3], 'pupd', now)
if ARGV[5] == '1' then
  if ARGV[4] == '' then redis.call('HDEL', record, 'pmsg') else redis.call('HSET', record, 'pmsg', ARGV[4]) end
end
local msg = redis.call('HGET', record, 'pmsg')
local event = {type = 'progress', key = ARGV[7], current = tonumber(ARGV[2]),
  total = tonumber(ARGV[3]), updated_at = now}
if msg then event['message'] = msg end
redis.call('PUBLISH', ARGV[6] .. ARGV[7], cjson.encode(event))
return 1
