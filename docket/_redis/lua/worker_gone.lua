-- A worker leaving cleanly removes its heartbeat so it stops being listed at once.
-- KEYS: 1 workers zset, 2 this worker's task set
-- ARGV: 1 worker name
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
