-- Take up to COUNT new messages of one partition for a worker and claim them (state
-- running, start time, published) as claim.lua does, so the batch arrives
-- already claimed, in one round trip. Levels are the partition's streams, HIGH first.
-- 1. For each level with scan '1': the entries a blocking XREADGROUP sent just before
--    this call (on the same connection) delivered to this worker, or that an earlier
--    call left for lack of room: this consumer's pending entries after the level's
--    watermark that were delivered once.
-- 2. When read is '1', each level's reserve (the worker's anti-starvation shares, see
--    _worker_reading.py), lowest level first, then what is left of COUNT for each level
--    in order, HIGH first, by non-blocking XREADGROUPs.
-- Nothing beyond COUNT is claimed: what a blocking read delivered past it stays pending
-- after the watermark, for the next call to scan.
-- KEYS: levels[stream]
-- ARGV: group, worker, count, read, events_prefix, record_prefix,
--       levels[watermark, scan, reserve]
--   watermark: the newest id of the level this worker has had back (exclusive)
--   scan: '1' to claim what is pending after the watermark first
--   reserve: how many slots of COUNT step 2 offers the level before the order applies
-- Returns {watermarks, more, drained, entries}, per level its new watermark, 1 when
-- entries may still wait after it (scan it next time), and 1 when a read of it came back
-- short (it has nothing more waiting); each
-- entry is {level index, id, flat fields, started}: started is the claimed run's start
-- time, or false when it was not claimed here (a stale copy or a malformed entry: the
-- worker decodes it, then claims or dead-letters it as usual). An entry deleted since
-- its delivery (cancelled) is acked and left out.
local group, worker = ARGV[1], ARGV[2]
local left, read = tonumber(ARGV[3]), ARGV[4] == '1'
local levels = #KEYS
local out, marks, more, drained = {}, {}, {}, {}
local now = nil

local function claim(i, mid, fields, idle)
  local stream = KEYS[i]
  local key, gen
  for j = 1, #fields, 2 do
    if fields[j] == 'key' then key = fields[j + 1] elseif fields[j] == 'gen' then gen = fields[j + 1] end
  end
  local started = false
  if key and key ~= '' and gen and string.match(gen, '^%d+$') then
    local record = ARGV[6] .. key
    local r = redis.call('HMGET', record, 'state', 'gen')
    if r[1] == 'queued' and r[2] == gen then
      -- A fresh lease, as claim.lua takes: an entry left by an earlier call idled.
      if idle > 0 then
        redis.call('XCLAIM', stream, group, worker, 0, mid, 'JUSTID')
      end
      now = now or fmt_time(server_now())
      redis.call('HSET', record, 'state', 'running', 'worker', worker, 'started', now, 'mid', mid)
      publish_state(ARGV[5], key, 'running', {worker = worker, started_at = now})
      started = now
    end
  end
  marks[i] = mid
  out[#out + 1] = {i, mid, fields, started}
  left = left - 1
end

-- Up to n new entries of level i; how many came.
local function take(i, n)
  local got = redis.call('XREADGROUP', 'GROUP', group, worker, 'COUNT', n, 'STREAMS', KEYS[i], '>')
  local entries = {}
  if got and got[1] then
    -- Redis answers {{stream, entries}}; memory:// (fakeredis) answers {stream, entries}.
    if type(got[1]) == 'table' then entries = got[1][2] else entries = got[2] end
  end
  for _, entry in ipairs(entries) do claim(i, entry[1], entry[2], 0) end
  if #entries < n then drained[i] = 1 end
end

for i = 1, levels do
  marks[i] = ARGV[4 + 3 * i]
  more[i] = 0
  drained[i] = 0
  if ARGV[5 + 3 * i] == '1' then
    if left <= 0 then
      more[i] = 1
    else
      local pending = redis.call('XPENDING', KEYS[i], group, '(' .. marks[i], '+', left, worker)
      if #pending == left then more[i] = 1 end
      for _, p in ipairs(pending) do
        local mid = p[1]
        if tonumber(p[4]) ~= 1 then
          marks[i] = mid -- a redelivery (XAUTOCLAIM), claimed the usual way
        else
          local found = redis.call('XRANGE', KEYS[i], mid, mid)[1]
          if found == nil then
            marks[i] = mid
            redis.call('XACK', KEYS[i], group, mid)
          else
            claim(i, mid, found[2], tonumber(p[3]))
          end
        end
      end
    end
  end
end
if read then
  for i = levels, 1, -1 do
    local reserve = tonumber(ARGV[6 + 3 * i])
    if reserve > 0 and left > 0 then
      take(i, math.min(reserve, left))
    end
  end
  for i = 1, levels do
    if left <= 0 then break end
    if drained[i] == 0 then take(i, left) end
  end
end
return {marks, more, drained, out}
