-- Add or lift a strike and tell every worker and producer.
-- KEYS: 1 strikes hash
-- ARGV: 1 action (strike|restore), 2 encoded condition, 3 strikes channel
if ARGV[1] == 'strike' then
  redis.call('HSET', KEYS[1], ARGV[2], '1')
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
