-- Cooldown: the first run opens a window, later runs inside it are refused.
-- The key holds '<generation>:<task key>' of the run that opened the window and lives
-- exactly as long as the window.
-- KEYS: cooldown
-- ARGV: op, token, window_ms
--   op: 'start' | 'undo' (undo ignores window_ms)
--   token: '<generation>:<task key>'
-- start returns {1, 0} when the run may go, {0, ms left in the window} when it may not.
-- undo deletes the key if this run opened it (a later dependency refused the run).
local key, op, token = KEYS[1], ARGV[1], ARGV[2]

if op == 'undo' then
  if redis.call('GET', key) == token then
    return redis.call('DEL', key)
  end
  return 0
end

if redis.call('SET', key, token, 'NX', 'PX', tonumber(ARGV[3])) then
  return {1, 0}
end
-- A redelivered copy of the run that opened the window goes on.
if redis.call('GET', key) == token then
  return {1, 0}
end
local left = redis.call('PTTL', key)
if left < 0 then
  -- Never left without an expiry, whoever wrote it.
  redis.call('PEXPIRE', key, tonumber(ARGV[3]))
  left = tonumber(ARGV[3])
end
return {0, left}
