-- A worker leaving cleanly removes its heartbeat so it stops being listed at once.
-- KEYS: workers, worker_tasks
-- ARGV: worker
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
