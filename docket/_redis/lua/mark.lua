-- The worker-side calls code written for the released docket makes by hand
-- (Execution.claim, mark_as_completed / _failed / _cancelled): one run's record moved to
-- RUNNING or to a final state, fenced by generation like the worker's own claim and
-- settle. A message of the run's, when it has one, is acked with the final state.
-- KEYS: record, result_key, stream
-- ARGV: generation, state, worker, error, result, ttl, events_prefix, key, group, mid
--   state: running | completed | failed | cancelled
--   result: the result's bytes ('' = none)
--   ttl: seconds a final record is kept
--   mid: the run's message id ('' = none)
-- Returns the started time for a claim, 1 for a final state written, 0 when the key now
-- belongs to a newer run (superseded) or, for a claim, was cancelled.
local record, result_key, stream = KEYS[1], KEYS[2], KEYS[3]
local gen, state, worker = ARGV[1], ARGV[2], ARGV[3]
local ttl, prefix, key = tonumber(ARGV[6]), ARGV[7], ARGV[8]
local r = redis.call('HMGET', record, 'state', 'gen')
if r[2] and tonumber(r[2]) > tonumber(gen) then
  return 0
end
local now = fmt_time(server_now())
if state == 'running' then
  if r[1] == 'cancelled' then
    publish_state(prefix, key, 'cancelled')
    return 0
  end
  redis.call('HSET', record, 'state', 'running', 'gen', gen, 'worker', worker,
    'started', now, 'pcur', 0, 'ptot', 100)
  redis.call('HDEL', record, 'pmsg', 'pupd', 'completed', 'error', 'result', 'traceback')
  -- A record only progress wrote expires; a running one lasts until it ends.
  redis.call('PERSIST', record)
  publish_state(prefix, key, 'running', {worker = worker, started_at = now})
  return now
end
if ARGV[10] ~= '' then
  drop_message(stream, ARGV[9], ARGV[10])
end
if ttl > 0 then
  -- A record this call creates (a run marked by hand) belongs to this run's generation.
  redis.call('HSET', record, 'gen', gen)
end
finish_run(record, result_key, prefix, key, state, ARGV[4], ARGV[5], ttl, now, '')
return 1
