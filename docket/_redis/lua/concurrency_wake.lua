-- Wake a parked run of a partitioned docket in its own partition, its slot reserved by
-- concurrency_free.lua: queue its message again from its record. A run not parked yet
-- (between concurrency_take.lua and concurrency_park.lua) is marked instead, and goes
-- on when it comes to park.
-- KEYS: stream, record, high_stream, low_stream
-- ARGV: key, holders, events_prefix
--   stream, high_stream, low_stream: the partition's NORMAL, HIGH and LOW streams (a
--     woken run goes back to its level's, by its record's 'prio')
--   holders: the limit's zset of slot holders (what the record is parked on)
-- Returns 1 (woken or marked) or 0 (gone: cancelled, replaced or finished; its
-- reserved slot is to be given back)
local record = KEYS[2]
local key, holders = ARGV[1], ARGV[2]
local r = redis.call('HMGET', record, 'state', 'parked', 'gen', 'function', 'when',
  'attempt', 'payload', 'sig', 'trace', 'ser', 'prio', 'meta')
if r[1] == 'scheduled' and r[2] == holders then
  local prio = r[11] or '0'
  local mid = redis.call('XADD', level_stream(KEYS[3], KEYS[1], KEYS[4], prio), '*',
    'key', key, 'gen', r[3], 'function', r[4], 'when', r[5], 'attempt', r[6],
    'payload', r[7], 'sig', r[8], 'trace', r[9], 'ser', r[10], 'prio', prio,
      'meta', r[12] or '')
  redis.call('HSET', record, 'state', 'queued', 'mid', mid)
  redis.call('HDEL', record, 'payload', 'sig', 'ser', 'parked', 'meta')
  publish_state(ARGV[3], key, 'queued', {when = r[5]})
  return 1
end
if r[1] == 'running' or r[1] == 'queued' then
  redis.call('HSET', record, 'wake', holders)
  return 1
end
return 0
