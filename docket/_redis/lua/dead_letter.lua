-- Move messages that cannot be run (undecodable, garbled, unknown task, bad signature) to
-- the dead-letter stream with their raw fields, the reason and the delivery count.
-- KEYS: stream, dead_letters
-- ARGV: group, worker, record_prefix, events_prefix, ttl,
--       messages[mid, reason, deliveries]
--   ttl: seconds the failed record is kept
local ctx = {stream = KEYS[1], dead_letters = KEYS[2], group = ARGV[1], worker = ARGV[2],
  record_prefix = ARGV[3], events_prefix = ARGV[4], ttl = tonumber(ARGV[5]),
  now = fmt_time(server_now())}
for i = 6, #ARGV, 3 do
  local mid = ARGV[i]
  -- A message deleted since it was read is still recorded, without its fields.
  local entry = redis.call('XRANGE', ctx.stream, mid, mid)[1]
  dead_letter_message(ctx, mid, entry and entry[2] or {}, ARGV[i + 1], ARGV[i + 2])
end
return 1
