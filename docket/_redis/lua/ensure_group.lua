-- Create the stream and its consumer group if either is missing.
-- KEYS: stream
-- ARGV: group
local ok = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
return ok and 1 or 0
