-- heartbeat.lua: keep a registration (and its session binding) alive for another TTL.
--
-- KEYS[1] instance hash, KEYS[2] owner string (see register.lua)
-- ARGV[1] owner tag of the calling session ('' for a caller without a session), ARGV[2] TTL in ms, ARGV[3] now in ms.
--
-- Returns 1 when refreshed, 0 when the instance is not registered,
-- -1 when it is bound to another session.

local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then
  return -1
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'online', 'lastSeen', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
return 1
