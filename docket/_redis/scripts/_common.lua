-- Shared helpers, prepended to every script by the loader.
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt_time(t)
  return string.format('%.6f', t)
end

local function publish_state(channel_prefix, key, state, extra)
  local event = {type = 'state', key = key, state = state}
  if extra then
    for k, v in pairs(extra) do event[k] = v end
  end
  redis.call('PUBLISH', channel_prefix .. key, cjson.encode(event))
end
