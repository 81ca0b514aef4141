-- Renew the leases of this worker's in-flight messages. JUSTID keeps the delivery count a
-- true count of deliveries; messages another worker has taken over are left alone.
-- KEYS: stream
-- ARGV: group, worker, messages[mid, deliveries]
-- Returns the ids whose lease was lost.
local stream, group, worker = KEYS[1], ARGV[1], ARGV[2]
local lost = {}
for i = 3, #ARGV, 2 do
  local mid, deliveries = ARGV[i], tonumber(ARGV[i + 1])
  local entry = redis.call('XPENDING', stream, group, mid, mid, 1)[1]
  if entry ~= nil and entry[2] == worker and tonumber(entry[4]) == deliveries then
    redis.call('XCLAIM', stream, group, worker, 0, mid, 'JUSTID')
  else
    table.insert(lost, mid)
  end
end
return lost
