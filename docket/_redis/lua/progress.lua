-- Record progress of a running task, if the key still belongs to this run.
-- KEYS: record
-- ARGV: generation, increment, total, message, message_set, events_prefix, key, ttl
--   generation: '' = whichever run holds the key (a key with no run yet takes any)
--   increment: 0 = none; total: '' = unchanged
--   message: '' clears it, only when message_set is 1 (else 0: left as it is)
--   ttl: seconds a record that only progress wrote is kept
-- Returns {current, total}, or 0 when the key belongs to another run.
local record = KEYS[1]
local held = redis.call('HGET', record, 'gen')
local has_state = redis.call('HEXISTS', record, 'state') == 1
if ARGV[1] ~= '' and held and held ~= ARGV[1] then return 0 end
local now = fmt_time(server_now())
local current
if tonumber(ARGV[2]) > 0 then
  current = redis.call('HINCRBY', record, 'pcur', ARGV[2])
else
  current = tonumber(redis.call('HGET', record, 'pcur') or '0')
  redis.call('HSET', record, 'pcur', current)
end
if ARGV[3] ~= '' then redis.call('HSET', record, 'ptot', ARGV[3]) end
local total = tonumber(redis.call('HGET', record, 'ptot') or '100')
redis.call('HSET', record, 'ptot', total, 'pupd', now)
if ARGV[5] == '1' then
  if ARGV[4] == '' then redis.call('HDEL', record, 'pmsg') else redis.call('HSET', record, 'pmsg', ARGV[4]) end
end
local msg = redis.call('HGET', record, 'pmsg')
local event = {type = 'progress', key = ARGV[7], current = current,
  total = total, updated_at = now}
if msg then event['message'] = msg end
if not has_state then
  -- Progress for a key no run holds yet (a tool reporting ahead of its claim) must not
  -- leave a record behind forever: it lasts as long as a finished run's would.
  local ttl = tonumber(ARGV[8] or '0') or 0
  redis.call('PEXPIRE', record, ttl > 0 and math.floor(ttl * 1000) or 60000)
end
redis.call('PUBLISH', ARGV[6] .. ARGV[7], cjson.encode(event))
return {current, total}
