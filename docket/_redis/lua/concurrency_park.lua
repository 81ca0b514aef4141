-- A partitioned docket's second step in taking a concurrency slot, in the run's own
-- partition, once concurrency_take.lua queued it as a waiter: move the message's fields
-- into the task's record and ack the message, so the parked run holds no worker slot
-- and no stream message. A release that came in between (concurrency_wake.lua marked
-- the record 'wake') has reserved a slot for it: then the run goes on instead.
-- KEYS: stream, record
-- ARGV: group, worker, key, mid, deliveries, generation, holders, events_prefix
--   holders: the limit's zset of slot holders (what the record is parked on)
-- Returns 1 (a slot was reserved for it: run), 0 (parked) or -1 (this worker no longer
-- owns the message)
local stream, record = KEYS[1], KEYS[2]
local group, worker, key, mid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local holders = ARGV[7]

local entry = redis.call('XPENDING', stream, group, mid, mid, 1)[1]
if entry == nil or entry[2] ~= worker or tonumber(entry[4]) ~= tonumber(ARGV[5]) then
  return -1
end
if redis.call('HGET', record, 'wake') == holders then
  redis.call('HDEL', record, 'wake')
  return 1
end
local entries = redis.call('XRANGE', stream, mid, mid)
local fields = entries[1] and entries[1][2] or {}
local copy = {'state', 'scheduled', 'parked', holders}
for j = 1, #fields, 2 do
  local name = fields[j]
  if name == 'payload' or name == 'sig' or name == 'ser' or name == 'trace'
      or name == 'attempt' or name == 'when' or name == 'function' or name == 'meta' then
    table.insert(copy, name)
    table.insert(copy, fields[j + 1])
  end
end
if redis.call('HGET', record, 'gen') == ARGV[6] then
  redis.call('HSET', record, unpack(copy))
  redis.call('HDEL', record, 'mid', 'worker', 'started')
  publish_state(ARGV[8], key, 'scheduled', {})
end
drop_message(stream, group, mid)
return 0
