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
if park_record(stream, record, mid, holders, ARGV[6]) then
  publish_state(ARGV[8], key, 'scheduled', {})
end
drop_message(stream, group, mid)
return 0
