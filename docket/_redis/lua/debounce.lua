-- Debounce: a burst of runs ends in one run, once `settle` has passed with no new one.
-- One hash per debounced task (or argument value):
--   winner  the task key of the run that will go (the first of the burst)
--   seen    server ms of the latest run of the burst
-- The winner keeps coming back until `settle` has passed since `seen`; every other run
-- is dropped and only moves `seen`. A winner that is no longer pending (cancelled,
-- struck, finished) hands the burst to the next run.
-- KEYS: burst
-- ARGV: key, settle_ms, expiry_ms, record_prefix, checked_winner, winner_pending
--   burst: the debounce hash
--   key: this run's task key
--   expiry_ms: how long the hash lives (refreshed on every visit)
--   record_prefix: where the winner's record lives ('' on a partitioned docket, whose
--     runs live in several partitions: the caller read the winner's state there first)
--   checked_winner, winner_pending: that winner, and '1' if it was still scheduled,
--     queued or running ('0' if not); a different winner by now counts as pending
-- Returns {1, 0} go, {2, ms to wait} come back later, {3, 0} drop.
local key, me = KEYS[1], ARGV[1]
local settle, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = math.floor(server_now() * 1000)
local function ms(t) return string.format('%.0f', t) end

local state = redis.call('HMGET', key, 'winner', 'seen')
local winner, seen = state[1], tonumber(state[2])
if winner and winner ~= me then
  local pending
  if ARGV[4] ~= '' then
    local winner_state = redis.call('HGET', ARGV[4] .. winner, 'state')
    pending = winner_state == 'scheduled' or winner_state == 'queued' or winner_state == 'running'
  else
    pending = winner ~= ARGV[5] or ARGV[6] == '1'
  end
  if not pending then
    winner = false
  end
end

if not winner then
  redis.call('HSET', key, 'winner', me, 'seen', ms(now))
  redis.call('PEXPIRE', key, ttl)
  return {2, settle}
end

if winner == me then
  local quiet = now - (seen or 0)
  if quiet >= settle then
    redis.call('DEL', key)
    return {1, 0}
  end
  redis.call('PEXPIRE', key, ttl)
  return {2, settle - quiet}
end

redis.call('HSET', key, 'seen', ms(now))
redis.call('PEXPIRE', key, ttl)
return {3, 0}
