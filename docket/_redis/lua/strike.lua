-- Add or lift a strike and tell every worker and producer.
-- KEYS: strikes
-- ARGV: action, condition, strikes_channel
--   action: strike | restore; condition: the encoded condition
if ARGV[1] == 'strike' then
  redis.call('HSET', KEYS[1], ARGV[2], '1')
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
