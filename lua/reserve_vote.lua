-- reserve_vote.lua (Redis Cluster): take a place in an instance's vote-rate window before
-- its vote runs in the decision's slot (the window lives in the instance's slot).
--
-- A vote that is then not recorded gives its place back (LREM of the returned time), so
-- only recorded votes count; a place is taken atomically, so hubs racing for the last
-- place cannot both get it.
--
-- KEYS[1] rate  list  the instance's recent vote times (ms), newest first
-- ARGV[1] most votes per window, ARGV[2] window in ms.
--
-- Returns {1, time taken} when reserved, {0, ms until a place frees} when the window is full.

local max, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('LLEN', KEYS[1]) >= max then
  local oldest = tonumber(redis.call('LINDEX', KEYS[1], max - 1))
  if oldest and oldest + window > now then
    return {0, string.format('%.0f', oldest + window - now)}
  end
end
local taken = string.format('%.0f', now)
redis.call('LPUSH', KEYS[1], taken)
redis.call('LTRIM', KEYS[1], 0, max - 1)
redis.call('PEXPIRE', KEYS[1], window)
return {1, taken}
